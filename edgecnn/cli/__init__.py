"""The `edgecnn` command: a thin shell over the Python API.

Each verb lives in its own module and is imported only when used, so a verb whose optional backend is
missing does not break the others. EdgecnnError becomes one line on stderr and exit 1.
"""

import importlib
import sys

import click

from edgecnn import __version__
from edgecnn.core.errors import EdgecnnError, hand_to_launcher

# verb -> module holding a click command of the same name; listed in pipeline order
COMMANDS = {
    "train": "edgecnn.cli.train",
    "eval": "edgecnn.cli.train",
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
@click.version_option(__version__, prog_name="edgecnn")
def cli():
    """edgecnn: train -> export -> quantize -> compile -> verify -> bench -> bundle, for small CNNs."""


def main(argv=None) -> int:
    try:
        cli.main(args=argv, prog_name="edgecnn", standalone_mode=False)
    except EdgecnnError as e:
        if not hand_to_launcher(str(e)):
            click.echo(f"error: {e}", err=True)
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
