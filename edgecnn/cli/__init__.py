"""The `edgecnn` command: a thin shell over the Python API.

Each verb lives in its own module and is imported only when used, so a verb whose optional backend is
missing does not break the others. EdgecnnError becomes one line on stderr and exit 1.
"""

import importlib
import platform
import sys
from pathlib import Path

import click

from edgecnn import __version__
from edgecnn.core.errors import EdgecnnError, MissingDependency, hand_to_launcher

# verb -> module holding a click command of the same name; listed in pipeline order
COMMANDS = {
    "train": "edgecnn.cli.train",
    "eval": "edgecnn.cli.train",
    "recipes": "edgecnn.cli.train",
    "export": "edgecnn.cli.export",
    "info": "edgecnn.cli.export",
    "quantize": "edgecnn.cli.quantize",
    "compile": "edgecnn.cli.compile",
    "targets": "edgecnn.cli.compile",
    "tune": "edgecnn.cli.tune",
    "build": "edgecnn.cli.compile",
    "verify": "edgecnn.cli.verify",
    "bench": "edgecnn.cli.bench",
    "bundle": "edgecnn.cli.bundle",
    "run": "edgecnn.cli.run",
}

# a package a verb needs that an install may lack (a board's has none of the host extra) -> (pip name, extra)
PACKAGES = {"torch": ("torch", "host"), "onnx": ("onnx", "host"), "onnxscript": ("onnxscript", "host"),
            "matplotlib": ("matplotlib", "host"), "PIL": ("pillow", "host"), "onnxruntime": ("onnxruntime", None)}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return getattr(importlib.import_module(COMMANDS[name]), name.replace("-", "_") + "_cmd")

    def resolve_command(self, ctx, args):
        if args and args[0] not in COMMANDS and not args[0].startswith("-"):
            from edgecnn.core.errors import suggest

            raise click.UsageError(f"unknown command '{args[0]}'{suggest(args[0], COMMANDS)}")
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgecnn", message="%(prog)s %(version)s (Python "
                      f"{platform.python_version()}, {Path(__file__).resolve().parents[1]})")
def cli():
    """edgecnn: train -> export -> quantize -> compile -> verify -> bench -> bundle, for small CNNs."""


def main(argv=None) -> int:
    try:
        cli.main(args=argv, prog_name="edgecnn", standalone_mode=False)
    except EdgecnnError as e:
        if not hand_to_launcher(str(e)):
            click.echo(f"error: {e}", err=True)
        return 1
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if top not in PACKAGES:
            raise
        click.echo(f"error: {MissingDependency(*PACKAGES[top])}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
