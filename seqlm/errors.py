"""One exception type for bad input, so the CLI can print one clear line and exit non-zero."""


class SeqlmError(Exception):
    """Bad input or configuration: the message names the file (or key) and the problem."""
