"""The one exception type users see: a one-line message that names the problem."""
import sys

INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it


class OptTreeError(ValueError):
    """Bad input or an unusable model/configuration; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def report_errors(run, *args, resumable: bool = False):
    """Call ``run(*args)``; an OptTreeError becomes one ``error: ...`` line on stderr and None.

    Ctrl-C becomes one line too ("interrupted", with "rerun the same command to resume" when the
    command is ``resumable``) and ``SystemExit(130)``. The command lines use it as their one error
    boundary (exit code 2 on None).
    """
    try:
        return run(*args)
    except OptTreeError as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    except KeyboardInterrupt:
        print("interrupted" + ("; rerun the same command to resume" if resumable else ""), file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
