"""The `edgecnn` command: a thin shell over the Python API.

Each verb lives in its own module and is imported only when used, so a verb whose optional backend is
missing does not break the others. Every error becomes one line on stderr and exit 1 (main): an
EdgecnnError says the problem and the fix; any other exception (TVM, ONNX, ONNX Runtime, torch, the OS, a bug
of ours) is named with the stage it came from and what to do. `--debug` or EDGECNN_DEBUG=1 adds the traceback.
"""

import importlib
import os
import platform
import sys
import traceback
from pathlib import Path

import click

from edgecnn import __version__
from edgecnn.core.errors import DEBUG_ENV, EdgecnnError, MissingDependency, hand_to_launcher, one_line

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
@click.option("--debug", is_flag=True, help=f"show the traceback of an error (also {DEBUG_ENV}=1; accepted anywhere "
              "on the command line)")
def cli(debug):
    """edgecnn: train -> export -> quantize -> compile -> verify -> bench -> bundle, for small CNNs."""


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    before = os.environ.get(DEBUG_ENV)
    if "--debug" in args:
        os.environ[DEBUG_ENV] = "1"  # the backends read it too (TVM's and ONNX Runtime's native logs shown)
    try:
        return run([a for a in args if a != "--debug"], debug=os.environ.get(DEBUG_ENV) == "1")
    finally:
        if before is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = before


def run(args: list[str], *, debug: bool) -> int:
    verb = next((a for a in args if a in COMMANDS), "edgecnn")
    try:
        cli.main(args=args, prog_name="edgecnn", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if top not in PACKAGES:  # not a package an install may lack: a bug of ours, below
            return failed(e, verb, debug=debug)
        if debug:
            traceback.print_exc()
        click.echo(f"error: {MissingDependency(*PACKAGES[top])}", err=True)
        return 1
    except Exception as e:  # the one boundary: whatever failed, one line (the traceback only when asked)
        return failed(e, verb, debug=debug)
    return 0


def failed(e: Exception, verb: str, *, debug: bool) -> int:
    """Whatever failed, one line on stderr and exit 1 (the traceback only when asked)."""
    if debug:
        traceback.print_exc()
    message = str(e) if isinstance(e, EdgecnnError) else one_line(e, verb)
    if not hand_to_launcher(message):
        click.echo(f"error: {message}", err=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
