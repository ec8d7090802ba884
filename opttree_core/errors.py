"""The one exception type users see: a one-line message that names the problem."""
import sys


class OptTreeError(ValueError):
    """Bad input or an unusable model/configuration; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def report_errors(run, *args):
    """Call ``run(*args)``; an OptTreeError becomes one ``error: ...`` line on stderr and None.

    The command lines use it as their one error boundary (exit code 2 on None).
    """
    try:
        return run(*args)
    except OptTreeError as err:
        print(f"error: {err}", file=sys.stderr)
        return None
