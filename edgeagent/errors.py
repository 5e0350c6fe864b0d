"""Errors an operator can fix. The CLI prints them as one line and exits 2, never a traceback."""

from __future__ import annotations


class OperatorError(Exception):
    """A problem with input the operator controls: flags, config, files, credentials.

    The message must say what is wrong and where (file, key, path), on one line.
    """

    exit_code = 2


class ConfigError(OperatorError):
    pass
