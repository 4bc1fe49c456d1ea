"""The exception types the store raises."""


class StoreError(Exception):
    """A store operation failed; the message says what and where."""


class CorruptObject(StoreError):
    """A stored object's bytes did not match its name; it has been removed."""

    def __init__(self, digest: str, message: str) -> None:
        """``digest`` names the damaged object; ``message`` says what was done about it."""
        super().__init__(message)
        self.digest = digest
