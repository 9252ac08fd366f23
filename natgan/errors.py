"""Error types the CLI turns into one-line messages and exit codes.

Library code raises these instead of printing so that tests and notebooks get exceptions, and the
CLI alone decides how they look (exit 2 for bad usage/configuration, 1 for failures).
"""


class NatGanError(Exception):
    """A failure the user can act on; the message is one line naming the file/key/value at fault."""

    exit_code = 1


class ConfigError(NatGanError):
    """A recipe, ``--set`` override or argument is invalid (usage error, exit code 2)."""

    exit_code = 2


class CheckpointError(NatGanError):
    """A checkpoint file is missing, truncated, of an unknown version, or not a checkpoint."""


class Interrupted(NatGanError):
    """The user insisted (a second Ctrl-C): stop now, saying what was and was not saved (exit 130)."""

    exit_code = 130


class DataError(NatGanError):
    """A dataset or image is missing, unreadable, or incomplete."""


def unwrap_worker_error(exc: BaseException) -> BaseException:
    """The worker's own error behind a DataLoader's re-raise.

    Why: PyTorch re-raises a worker's exception in the parent as the same type with the message
    "Caught DataError in DataLoader worker process 0. Original Traceback ...": the line that names the
    bad record is the last one. Returns a clean exception of the same nat-gan type, or ``exc`` itself.
    """
    text = str(exc)
    if not isinstance(exc, NatGanError) or "DataLoader worker" not in text.splitlines()[0]:
        return exc
    last = text.strip().splitlines()[-1]
    prefix = f"{type(exc).__name__}: "
    return type(exc)(last[len(prefix):] if last.startswith(prefix) else last)
