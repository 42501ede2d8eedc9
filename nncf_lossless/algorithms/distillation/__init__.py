"""The `distillation` compression entry (see algo.py)."""
