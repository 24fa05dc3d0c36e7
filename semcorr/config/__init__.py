"""Settings as frozen, plain data, and the protocols table."""
