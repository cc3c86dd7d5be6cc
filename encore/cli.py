"""Command-line entry points (``python -m encore.<tool>``) end bad input and missing data with one line.

``run(main)`` calls the tool's ``main()``; an error of the kinds bad input and missing data raise (ValueError and its
subclasses, OSError, RuntimeError, encore.data.files.DataError) ends the process with one line naming the tool, the
kind and the message's first line, exit status 1. ``ENCORE_TRACEBACK=1`` lets the traceback through (for a bug).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from encore.data.files import DataError

EXPECTED = (ValueError, OSError, RuntimeError, DataError)


def one_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def run(main: Callable[[], object]) -> None:
    """Run ``main`` as a command: its own exit status, or one line on stderr and status 1 for an expected error."""
    tool = os.path.basename(sys.argv[0]).removesuffix(".py") if sys.argv and sys.argv[0] else "encore"
    try:
        status = main()
    except EXPECTED as error:
        if os.environ.get("ENCORE_TRACEBACK"):
            raise
        message = f"{tool}: {type(error).__name__}: {one_line(error)}"
        raise SystemExit(message + " (ENCORE_TRACEBACK=1 shows where)") from None
    if isinstance(status, int):
        raise SystemExit(status)
