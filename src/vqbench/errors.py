"""Errors caused by the user's input. ``run.py`` prints them as one line, without a traceback."""


class VqbenchError(Exception):
    """Base class: the message names the bad value and how to fix it."""


class ConfigError(VqbenchError):
    pass


class DataError(VqbenchError):
    pass


class CheckpointError(VqbenchError):
    pass


class NonFiniteLossError(VqbenchError):
    pass
