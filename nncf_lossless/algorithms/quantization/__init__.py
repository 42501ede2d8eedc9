"""The `quantization` compression entry (see algo.py)."""
