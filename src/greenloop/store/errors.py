"""The one exception type the store raises."""


class StoreError(Exception):
    """A store operation failed; the message says what and where."""
