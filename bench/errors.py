"""User-facing errors of the suite.

A :class:`UsageError` is a user mistake (unknown variant, profile, extra or arm; a missing or
malformed results file; results that cannot be compared; an unwritable output folder). The
``ovd-bench`` command line prints its message on one line and exits with status 2; anything else
is an internal error and keeps its traceback.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A mistake in what the user asked for; the message names the problem and what is accepted."""
