"""Exceptions that reach the user as one clear line (the CLI prints them without a traceback)."""


class PanopticDepthError(Exception):
    """Base class of every error caused by user input (files, arguments, configs)."""


class DataError(PanopticDepthError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


class CheckpointError(PanopticDepthError):
    """A checkpoint cannot be read or does not match the model."""
