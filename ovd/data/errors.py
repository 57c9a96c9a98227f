"""The one exception type of the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input data. The message always names the file (or id) and the problem,
    so a user can find and fix the offending input without a debugger."""
