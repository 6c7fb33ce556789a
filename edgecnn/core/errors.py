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


DEBUG_ENV = "EDGECNN_DEBUG"  # 1: every error also prints its traceback (as --debug does)

# the package an exception comes from -> (its name for a user, what the user can do); backends add theirs
FOREIGN = {
    "onnx": ("ONNX", "the file is not a valid ONNX model: re-export it (onnx.checker.check_model names the problem)"),
    "google": ("ONNX", "the file is not a valid ONNX model (its bytes do not parse): re-export or re-download it"),
    "onnxruntime": ("ONNX Runtime", "check that ONNX Runtime runs the model (python -c \"import onnxruntime as o; "
                                    "o.InferenceSession('MODEL.onnx')\"), then re-export it"),
    "torch": ("PyTorch", "check the model code and the input shape it is given (--input-shape)"),
}


def register_foreign(packages, name: str, fix: str) -> None:
    """A backend names the packages it runs (their exceptions are told as `name` failing) and what to do."""
    for package in packages:
        FOREIGN[package] = (name, fix)


def report_to() -> str:
    """Where a bug is reported: the package's Issues URL when its metadata has one."""
    from importlib import metadata

    try:
        urls = metadata.metadata("edgecnn").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        urls = []
    found = [u.split(",", 1)[1].strip() for u in urls if u.lower().startswith(("issues", "bug"))]
    return found[0] if found else "the edgecnn issue tracker"


def last_line(exc: BaseException, limit: int = 240) -> str:
    """The line of a (often multi-line, C++-decorated) exception message that says what happened."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def origin(exc: BaseException) -> tuple[str | None, str]:
    """(the foreign package the exception was raised in, or None for edgecnn's own code; 'module.function:line'
    of the innermost edgecnn frame, the stage that was running)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/edgecnn/" in f.filename.replace("\\", "/")]
    where = ""
    if ours:
        f = ours[-1]
        module = f.filename.replace("\\", "/").rsplit("/edgecnn/", 1)[1].removesuffix(".py").replace("/", ".")
        where = f"edgecnn.{module}.{f.name}:{f.lineno}"
    package = type(exc).__module__.split(".")[0]
    for frame in reversed(frames if package not in FOREIGN else []):  # innermost first; TVM adds C++ frames
        path = "/" + frame.filename.replace("\\", "/")
        if "/edgecnn/" in path:
            break
        package = next((p for p in FOREIGN if f"/{p}/" in path), package)
        if package in FOREIGN:
            break
    return (package if package in FOREIGN else None), where


def one_line(exc: BaseException, verb: str) -> str:
    """The one line a user sees for an exception that is not an EdgecnnError: what failed, where, what to do."""
    what = f"{type(exc).__name__}: {last_line(exc)}"
    package, where = origin(exc)
    at = f" (in {where})" if where else ""
    if isinstance(exc, MemoryError):
        return f"{verb}: out of memory{at}: close other programs, use a smaller --batch, or a machine with more memory"
    if isinstance(exc, OSError):
        path = f": {exc.filename}" if exc.filename else ""
        return f"{verb}: {exc.strerror or last_line(exc)}{path}{at}: check the path, its permissions and the free space"
    if package:
        name, fix = FOREIGN[package]
        return f"{verb}: {name} failed{at}: {what}; {fix}"
    from importlib import metadata

    try:
        version = f" {metadata.version('edgecnn')}"
    except metadata.PackageNotFoundError:
        version = ""
    return (f"{verb}: internal error in edgecnn{version}{at}: {what}; this is a bug in edgecnn: please report it "
            f"to {report_to()} with the command and the output of `edgecnn --debug ...`")
