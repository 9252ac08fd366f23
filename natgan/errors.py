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


class DataError(NatGanError):
    """A dataset or image is missing, unreadable, or incomplete."""
