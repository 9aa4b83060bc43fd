"""The one exception type for errors a user can cause."""


class LowlabelError(ValueError):
    """A problem with the user's input, named, with what to do about it.

    The CLI prints the message without a traceback and exits with status 2.
    """
