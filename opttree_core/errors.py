"""The one exception type users see: a one-line message that names the problem."""


class OptTreeError(ValueError):
    """Bad input or an unusable model/configuration; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
