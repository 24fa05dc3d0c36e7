"""Results folders: their format, what a run records of itself, and an evaluation's metrics."""
