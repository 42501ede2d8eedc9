"""The `pruning` compression entry (see algo.py)."""
