"""Command-line parsing that exits with the documented code for a bad command line.

argparse exits 2 on a usage error; the README's table (and sysexits.h) says 64.
Every parser of every subcommand, including the delegated ones (``eval``,
``monitor``, ``train``), is this class or goes through :func:`usage_exit_code`.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from . import exitcodes


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors exit 64 (``EX_USAGE``), one line of usage then the error."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(exitcodes.USAGE, f"{self.prog}: error: {message}\n")


def usage_exit_code(code: object) -> int:
    """Map a ``SystemExit`` code from a plain argparse parser (2) to 64; keep the others."""
    if code == 2:
        return exitcodes.USAGE
    if code is None:
        return exitcodes.OK
    return code if isinstance(code, int) else 1
