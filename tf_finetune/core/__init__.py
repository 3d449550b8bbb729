"""The bottom layer: errors, atomic files, logging, progress and the run-folder layout. Imports nothing above."""
