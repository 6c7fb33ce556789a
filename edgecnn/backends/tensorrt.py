"""TensorRT (optional extra `[tensorrt]`): the slot in the backend interface."""

from edgecnn.errors import EdgecnnError, MissingDependency


def available() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return str(MissingDependency("tensorrt", "tensorrt")) + " (needs an NVIDIA GPU; on Jetson use JetPack's)"
    return None


def compile(onnx_path, target, precision, out_dir, **opts) -> dict:
    raise EdgecnnError("the TensorRT backend is not implemented yet")


def load(build_dir, manifest: dict, **opts):
    raise EdgecnnError("the TensorRT backend is not implemented yet")
