"""One exception type for bad input, so the CLI can print one clear line and exit non-zero."""


class SeqlmError(Exception):
    """Bad input or configuration: the message names the file (or key) and the problem."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (a database driver's spans several), else its type."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
