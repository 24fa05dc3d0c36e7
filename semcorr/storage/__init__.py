"""Atomic file writes, hashing, and the on-disk feature cache."""
