"""Errors caused by the user's input. ``run.py`` prints them as one line, without a traceback."""


class VqbenchError(Exception):
    """Base class: the message names the bad value and how to fix it."""

    def __init__(self, message: str = ""):
        # A DataLoader worker's exception is re-raised in the main process as type(error)(text that embeds the
        # worker's traceback); keep only the original message so that it still prints as one line.
        if "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


class ConfigError(VqbenchError):
    pass


class DataError(VqbenchError):
    pass


class CheckpointError(VqbenchError):
    pass


class NonFiniteLossError(VqbenchError):
    pass
