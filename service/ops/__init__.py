"""What operators do to the service's topics, as functions that return data.

The CLI verbs (`service.cli`) and the console (`service.console`) show what these return; a
refusal is `Refused`, raised before anything is written.
"""


class Refused(Exception):
    """The operation was refused (bad input, not found); nothing was written. `field` names the
    input at fault, when one is (the console shows the message beside it)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
