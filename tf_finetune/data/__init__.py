"""Reading data files and Hub datasets, and batching them by length."""
