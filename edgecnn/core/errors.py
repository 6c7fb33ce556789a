"""One exception type for every user-facing failure: the CLI turns it into one line and exit 1."""

import os

LAUNCHER_ENV = "EDGECNN_LAUNCHER"  # set by `--nproc` for its ranks: it prints their errors


class EdgecnnError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class Unsupported(EdgecnnError):
    """A backend has no implementation of an operator in the model (or of its attributes or types); other
    EdgecnnErrors from a backend are refusals with a reason (a rule, a precision, a device)."""


class MissingDependency(EdgecnnError):
    """A package is not installed: `extra` names edgecnn's optional extra that brings it, else pip installs it."""

    def __init__(self, module: str, extra: str | None = None):
        spec = f"'edgecnn[{extra}]'" if extra else module.split()[0]
        super().__init__(f"{module} is not installed: pip install {spec}")


def suggest(name: str, valid) -> str:
    """'unknown X' helper: list the valid names and the closest match."""
    import difflib

    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; valid: {', '.join(valid)}"


def hand_to_launcher(message: str) -> bool:
    """In a torchrun rank: put the error in torchrun's error file (its report shows it); True when edgecnn's
    own launcher (`--nproc`) will print it, so the rank stays quiet."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return False
    import json
    import time

    with open(path, "w") as f:
        json.dump({"message": message, "timestamp": int(time.time())}, f)
    return os.environ.get(LAUNCHER_ENV) == "1"
