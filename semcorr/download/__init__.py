"""Downloads of model weights and benchmark datasets into the folders the loaders read (download.py)."""
