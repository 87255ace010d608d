"""The one error type of linear-compare and its exit code."""

EXIT_ERROR = 2


class CompareError(Exception):
    """A problem the user can fix (selection, arguments, data); printed without a traceback, exit 2."""
