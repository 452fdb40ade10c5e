"""Errors of the data stage."""

from __future__ import annotations

from tinyevo.runtime import UserError


class DataError(UserError, ValueError):
    """Bad dataset input; the message names the config key, file or directory at fault."""


class Unreadable(Exception):
    """One image of a set could not be read (missing, truncated, not an image).

    Raised by a source's ``image()``; the pipeline skips it (``dataset.skip_corrupt: true``) or
    turns it into a :class:`DataError` naming the file.
    """

    def __init__(self, ref: str, reason: str):
        super().__init__(f"{ref}: {reason}")
        self.ref = ref
        self.reason = reason
