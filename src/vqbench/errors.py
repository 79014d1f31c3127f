"""Errors caused by the user's input. ``run.py`` prints them as one line, without a traceback."""


class VqbenchError(Exception):
    """Base class: the message names the bad value and how to fix it."""

    def __init__(self, message: str = ""):
        # A DataLoader worker's exception is re-raised in the main process as type(error)(text that embeds the
        # worker's traceback); keep only the original message so that it still prints as one line.
        if "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        # One line, whatever the wrapped library's message looked like.
        super().__init__(" ".join(message.split()))


class ConfigError(VqbenchError):
    pass


class DataError(VqbenchError):
    pass


class CheckpointError(VqbenchError):
    pass


class NonFiniteLossError(VqbenchError):
    """A loss, gradient norm, weight or optimizer state became NaN or infinite; ``step`` is the first such step."""

    def __init__(self, message: str = "", step: int | None = None):
        super().__init__(message)
        self.step = step


class OutputError(VqbenchError):
    """The run's output folder cannot take its results (not writable, disk full, holds another run's results)."""
