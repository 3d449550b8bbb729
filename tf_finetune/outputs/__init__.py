"""What a finished run leaves: run info, model card, report and plots, exports."""
