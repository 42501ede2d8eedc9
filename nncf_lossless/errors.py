"""User-facing errors: the checker's :class:`UserError` and :class:`DataError`, plus :class:`ConfigError`.

The base classes live in ``nncf_lossless.checker.errors`` because the checker ships alone to
device machines; everything else imports them from here.
"""

from nncf_lossless.checker.errors import DataError, UserError

__all__ = ["ConfigError", "DataError", "UserError"]


class ConfigError(UserError):
    """The config file or one of its entries is invalid."""
