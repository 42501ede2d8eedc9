"""The `hint_distillation` compression entry (see algo.py)."""
