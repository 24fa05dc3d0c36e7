"""The flow every experiment reuses: features, matching, evaluation, searches, single pairs."""
