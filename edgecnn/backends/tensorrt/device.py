"""What ties a TensorRT engine to a machine: the TensorRT version, the GPU (through cuda-python, not torch),
the target's `tensorrt:` section, the timing cache and the DLA core."""

import functools
import os

from edgecnn.backends.tensorrt import compat
from edgecnn.core.errors import EdgecnnError, MissingDependency
from edgecnn.core.progress import status


def available() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return str(MissingDependency("tensorrt", "tensorrt")) + " (needs an NVIDIA GPU; on Jetson use JetPack's)"
    try:
        cuda = cudart()
    except MissingDependency as e:
        return str(e)
    err, count = cuda.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        return "no CUDA GPU visible (TensorRT needs an NVIDIA GPU and its driver)"
    return None


def require_trt():
    """The tensorrt module, or EdgecnnError with the reason it cannot run here."""
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependency("tensorrt", "tensorrt") from None
    reason = available()
    if reason:
        raise EdgecnnError(reason)
    return trt


def cudart():
    """CUDA's runtime API from cuda-python (12.x: cuda.bindings.runtime; older: cuda.cudart)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise MissingDependency("cuda-python (TensorRT's device buffers)", "tensorrt") from None
    return runtime


def cuda_call(result):
    """cuda-python returns (error, *values): the values, or EdgecnnError naming the CUDA error."""
    err, *values = result
    if int(err) != 0:
        raise EdgecnnError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else tuple(values)


def target_config(target: dict) -> dict:
    """The target's `tensorrt:` section (a manifest's or a Target's raw YAML), checked."""
    cfg = target.get("tensorrt")
    missing = [k for k in ("version", "sm", "max_opset") if k not in (cfg or {})]
    if missing:
        raise EdgecnnError(f"target '{target.get('name')}' has no tensorrt.{missing[0]}: TensorRT targets "
                           "state version, sm and max_opset (see targets/jetson-orin.yaml)")
    return cfg


def local_device(trt) -> dict:
    """This machine's TensorRT version and GPU (the first CUDA device): what an engine is tied to."""
    cuda = cudart()
    props = cuda_call(cuda.cudaGetDeviceProperties(0))
    name = props.name.decode(errors="replace").rstrip("\0") if isinstance(props.name, bytes) else str(props.name)
    return {"tensorrt": trt.__version__, "gpu": name, "sm": f"{props.major}.{props.minor}"}


def mismatch(cfg: dict, target_name: str, local: dict) -> str | None:
    """Why this machine cannot build for the target (None when it can)."""
    gen = compat.generation(local["tensorrt"]).major
    if cfg["version"] == "local":
        allowed = cfg.get("generations", [10, 11])
        if gen not in allowed:
            return (f"target '{target_name}' takes TensorRT {' or '.join(map(str, allowed))}, "
                    f"this is {local['tensorrt']}")
    elif compat.generation(cfg["version"]).major != gen:
        return f"target '{target_name}' is TensorRT {cfg['version']}, this machine has TensorRT {local['tensorrt']}"
    if cfg["sm"] != "local" and str(cfg["sm"]) != local["sm"]:
        return (f"target '{target_name}' is sm_{str(cfg['sm']).replace('.', '')} ({cfg.get('gpu', 'its GPU')}), this "
                f"GPU is {local['gpu']} (sm_{local['sm'].replace('.', '')})")
    return None


def check_engine(record: dict, local: dict) -> None:
    """Refuse an engine built by another TensorRT or for another GPU, before it reaches the deserializer."""
    for key, what in (("tensorrt", "TensorRT"), ("sm", "GPU architecture (SM)")):
        if record.get(key) != local[key]:
            raise EdgecnnError(f"model.engine was built with TensorRT {record.get('tensorrt')} for {record.get('gpu')} "
                               f"(sm {record.get('sm')}); this machine has TensorRT {local['tensorrt']} on "
                               f"{local['gpu']} (sm {local['sm']}): the {what} differs and TensorRT engines are not "
                               "portable. Rebuild it here: edgecnn build BUILD_DIR --force")
    if record.get("gpu") != local["gpu"]:
        status.print(f"[yellow]warning[/]: model.engine was built on {record.get('gpu')}, this is {local['gpu']} "
                     "(same SM): it runs, but rebuild here for the best tactics")


def timing_cache_file(version: str, sm: str) -> str:
    """The timing cache shared by builds for one TensorRT version and GPU ($HOME is expanded where it builds)."""
    root = os.environ.get("EDGECNN_CACHE", "$HOME/.cache/edgecnn")
    return f"{root}/tensorrt/trt{version}-sm{sm}.timing"


def dla_core_of(default: int | None, override) -> int | None:
    """--dla-core N, or 'gpu' for none, overrides the default (the target's dla.core, or the build's)."""
    if override is None:
        return default
    return None if override == "gpu" else int(override)


@functools.cache
def trt_logger(trt):
    """One logger per process: TensorRT warns when builders and runtimes get different ones."""
    return trt.Logger(trt.Logger.WARNING)
