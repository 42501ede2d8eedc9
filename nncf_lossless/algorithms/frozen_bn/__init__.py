"""The `frozen_bn` compression entry (see algo.py)."""
