"""The Hub client: network only, a leaf above core."""
