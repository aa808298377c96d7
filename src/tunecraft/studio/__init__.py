"""tunecraft studio: a local web app over the run folders: runs table, run pages, comparisons, try-it, live training."""
