"""Errors the user is meant to read.

Every failure caused by the user's input (a path, a file, a config key, a value) raises a subclass
of `CebenchError` whose message names the file, key or value at fault. The command-line entry point
prints these as one line and exits with status 2 instead of showing a stack trace.
"""


class CebenchError(Exception):
    """Base class of errors caused by input the user can fix."""


class DatasetError(CebenchError):
    """A dataset path, image or annotation is missing or invalid."""


class ConfigError(CebenchError):
    """A config file, key or value is invalid."""


class CheckpointError(CebenchError):
    """A checkpoint is missing, corrupt, or of another architecture."""


class TrainingError(CebenchError):
    """Training cannot go on (for example the loss became NaN)."""
