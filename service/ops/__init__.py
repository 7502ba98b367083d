"""What operators do to the service's topics, as functions that return data.

The CLI verbs (`service.cli`) print what these return; a refusal is `Refused`, raised before
anything is written.
"""


class Refused(Exception):
    """The operation was refused (bad input, not found); nothing was written."""
