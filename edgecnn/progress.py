"""Rich progress bars and tables, shared by every long stage."""

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import sys

# results and tables: stdout (120 columns when it is a log or a pipe, not 80)
console = Console(width=None if sys.stdout.isatty() else 120)
status = Console(stderr=True)  # progress: stderr, so stdout stays parseable


def progress_bar(**kwargs) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=status, transient=False, **kwargs)
