"""The argument parser of nnos's own processes (the supervisor, the loop, the simulators): as
argparse's, with a help formatter of a fixed width. argparse's default one asks shutil for the
terminal's width, for every argument added — and shutil's import (with bz2, lzma and fnmatch)
was ≈ 25 ms of an emulated boot on the way to the first tick (benchmarks/RESULTS.md, issue 21).
These processes run under the supervisor, without a terminal; their help reads the same."""
from __future__ import annotations

import argparse
import os

WIDTH = 100


class Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        if width is None:
            width = (int(os.environ.get("COLUMNS", "0")) if os.environ.get("COLUMNS", "").isdigit() else 0) or WIDTH
            width -= 2
        super().__init__(prog, indent_increment, max_help_position, width)


class Parser(argparse.ArgumentParser):
    """With ``Formatter``; its subcommands' parsers too (add_subparsers makes them of this class)."""

    def __init__(self, *args, formatter_class=Formatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
