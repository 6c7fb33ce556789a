"""Rich consoles, progress bars and number formatting, shared by every long stage and every table."""

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# results and tables: stdout (120 columns when it is a log or a pipe, not 80)
console = Console(width=None if sys.stdout.isatty() else 120)
status = Console(stderr=True)  # progress: stderr, so stdout stays parseable


def progress_bar(**kwargs) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=status, transient=False, **kwargs)


def fmt(value, digits=3) -> str:
    """A number for a table cell: fixed digits, or 3 significant ones when very small or large."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)
