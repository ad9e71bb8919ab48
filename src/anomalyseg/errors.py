"""Exceptions that carry a message meant for the user.

The CLI prints a :class:`UserError` as one line on stderr and exits non-zero; anything else is a bug
and keeps its traceback under ``--debug``.
"""


class UserError(Exception):
    """Bad input from the user (path, config key, name, checkpoint): one readable line, no traceback."""


class NotFittedError(UserError):
    """A scorer that needs fitting was used before ``fit`` / ``load_state_dict``."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message, or its class name when it has none: what a one-line
    report of a caught exception shows."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
