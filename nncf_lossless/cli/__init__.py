"""The ``nncf-lossless`` command line."""
