"""The one exception type users see: a one-line message that names the problem."""
import json
import sys

INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it


class OptTreeError(ValueError):
    """Bad input or an unusable model/configuration; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def json_object(text, where) -> dict:
    """``text`` (str or bytes) parsed as a JSON object; not JSON, or JSON that is not an object, is a
    one-line OptTreeError naming ``where`` (a file, or "draft manifest FILE")."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise OptTreeError(f"{where} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise OptTreeError(f"{where} must hold a JSON object, not a {type(value).__name__}")
    return value


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
