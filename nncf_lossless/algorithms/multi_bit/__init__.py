"""The `multi_bit` compression entry (see algo.py)."""
