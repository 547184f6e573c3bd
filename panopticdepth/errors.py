"""Exceptions that reach the user as one clear line (the CLI prints them without a traceback)."""


class PanopticDepthError(Exception):
    """Base class of every error caused by user input (files, arguments, configs)."""


class DataError(PanopticDepthError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


class CheckpointError(PanopticDepthError):
    """A checkpoint cannot be read or does not match the model."""


def user_message(err: BaseException) -> str:
    """The one line to show for `err`.

    An error raised inside a DataLoader worker reaches the main process re-created with the whole
    worker traceback as its message ("Caught DataError in DataLoader worker process 0. Original
    Traceback ..."); its last line holds the original message, which is what the user needs.
    """
    text = str(err)
    if "Original Traceback" in text:
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        if lines:
            last = lines[-1]
            name = type(err).__name__
            for prefix in (f"{type(err).__module__}.{name}: ", f"{name}: "):
                if last.startswith(prefix):
                    return last[len(prefix) :]
            return last
    return text
