"""ONNX Runtime: the reference ONNX backend and the always-available fast CPU path.

int8 on x86 CPUs without VNNI: ONNX Runtime multiplies uint8 x int8 pairs with VPMADDUBSW, which saturates
at int16 (its quantization docs; int8 activations are shifted to uint8 first, so both Q/DQ forms meet it).
Where this CPU lacks VNNI, ONNX Runtime's advice is applied: `quantize --form onnxruntime` reduces the weight
range (reduce_range), and compile stores full-range int8 weights as uint8 with the zero point moved by 128,
the same values, which ONNX Runtime multiplies without saturation (u8 x u8). Both are recorded.
"""

import os
import platform
import shutil
from pathlib import Path

import numpy as np

from edgecnn.backends.base import Backend, QdqForm, Runner
from edgecnn.core import onnx_utils
from edgecnn.core.errors import DEBUG_ENV, EdgecnnError, MissingDependency, Unsupported

ONNX_TYPES = {"float": "float32", "double": "float64"}  # ONNX Runtime's element type names numpy spells otherwise
LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


# session config: intra-op threads sleep instead of spinning between ops (on a machine shared with other jobs a
# spinning thread burns the time slice the other one waits for; the benchmarks time ORT both ways)
NO_SPIN = {"session.intra_op.allow_spinning": "0"}


class OrtRunner(Runner):
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int = 0, providers=None, level: str = "all", *,
                 config: dict | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        for key, value in (config or {}).items():  # session config entries (onnxruntime_session_options_config_keys.h)
            opts.add_session_config_entry(key, value)
        opts.intra_op_num_threads = threads or 0
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
        # 4 (fatal only): a failed run's error reaches the user as the exception's one line (edgecnn.cli.main)
        opts.log_severity_level = 3 if os.environ.get(DEBUG_ENV) == "1" else 4
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented/... types
            error = Unsupported if type(e).__name__ == "NotImplemented" else EdgecnnError
            raise error(f"ONNX Runtime cannot load {onnx_path}: {str(e).splitlines()[0]}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        element = inp.type.removeprefix("tensor(").removesuffix(")")
        self.input_dtype = np.dtype(ONNX_TYPES.get(element, element))
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.input_shape = inp.shape[1:] if all(isinstance(d, int) for d in inp.shape[1:]) else None
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: x})))


ISA_FLAGS = ("AVX2", "FMA3", "AVX512F", "AVX512BW", "AVX512VNNI", "ASIMD", "ASIMDDP")  # numpy's names
SAFE_WEIGHT = 64  # |int8 weight| <= 64: a u8 x s8 pair sum (255 * 64 * 2) fits int16


def cpu_features() -> set[str]:
    """This CPU's SIMD features by CPUID, as numpy reads them (so an emulated CPU reports its own)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return {k for k, v in __cpu_features__.items() if v}


def int8_isa() -> dict:
    """What ONNX Runtime's int8 kernels meet here: the flags that matter, VNNI, and whether u8 x s8 saturates.
    numpy does not report AVX-VNNI (VEX): such a CPU counts as without VNNI, which costs speed, not accuracy."""
    feats = cpu_features()
    vnni = "AVX512VNNI" in feats
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    return {"flags": sorted(feats & set(ISA_FLAGS)), "vnni": vnni, "u8s8_saturates": x86 and not vnni}


def _weight_dqs(model):
    """DequantizeLinear nodes of int8 weights (initializers) that feed a Conv/Gemm/MatMul."""
    inits = {i.name: i for i in model.graph.initializer}
    users = {i for n in model.graph.node if n.op_type in onnx_utils.WEIGHTED for i in n.input[1:2]}
    return [(n, inits[n.input[0]]) for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in users
            and n.input[0] in inits and inits[n.input[0]].data_type == 3]  # 3: INT8


def full_range_weights(model) -> int:
    """How many int8 weights reach past SAFE_WEIGHT (the ones VPMADDUBSW can saturate on)."""
    from onnx import numpy_helper

    return sum(int(np.abs(numpy_helper.to_array(w).astype(np.int16)).max(initial=0) > SAFE_WEIGHT)
               for _, w in _weight_dqs(model))


def weights_to_uint8(model) -> int:
    """int8 weights -> uint8 (value + 128, zero point + 128): the same dequantized values; returns how many."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    done = 0
    for node, weight in _weight_dqs(model):
        zero = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zero is None or sum(n.input[2:3] == [zero.name] for n in model.graph.node) > 1:
            continue  # a missing or shared zero point: leave this weight as it is
        for init in (weight, zero):
            shifted = (numpy_helper.to_array(init).astype(np.int16) + 128).astype(np.uint8)
            init.CopyFrom(numpy_helper.from_array(shifted, init.name))
        done += 1
    return done


def write_fp16(onnx_path, dest: Path) -> dict:
    """The fp16 model ONNX Runtime runs for an fp16 build: weights and activations float16 (ONNX Runtime's
    float16 converter), input and output float32; what was converted, for the manifest."""
    import onnx

    from edgecnn.core import onnx_utils

    model = onnx.load(str(onnx_path))
    already = onnx_utils.is_fp16(model)
    half = onnx_utils.to_fp16(model)
    if onnx_utils.too_big(half):
        onnx.save(half, str(dest), save_as_external_data=True, location=dest.name + ".data")
    else:
        onnx.save(half, str(dest))
    return {"weights": "float16", "io": "float32",
            "how": "the source is fp16" if already else "onnxruntime.transformers float16 converter"}


def prepare_int8(path: Path) -> dict:
    """Apply ONNX Runtime's advice for this CPU to an int8 build's model.onnx; what was done, for the manifest."""
    import onnx

    isa = int8_isa()
    model = onnx.load(str(path))
    record = {"cpu": isa["flags"], "vnni": isa["vnni"], "weights": "int8"}
    if isa["u8s8_saturates"] and full_range_weights(model):
        record["weights"] = f"uint8 (zero point + 128): {weights_to_uint8(model)} weight tensors"
        record["why"] = "no VNNI: ONNX Runtime's u8 x s8 kernels (VPMADDUBSW) saturate at int16; u8 x u8 does not"
        onnx.save(model, str(path))
    return record


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    matrix_target = "onnxruntime-cpu"
    int8_form = "onnxruntime"  # its CPU int8 kernels fuse only its own placement

    @property
    def qdq_form(self) -> QdqForm:
        """ONNX Runtime's own CPU recipe: uint8 activations with zero points, Q/DQ after every op, so its fused
        int8 kernels take the graph; 7-bit weights (reduce_range) where this CPU's u8 x s8 kernels saturate."""
        return QdqForm(symmetric=False, op_types=None, reduce_range=int8_isa()["u8s8_saturates"])

    def lint_qdq(self, model) -> list:
        """ONNX Runtime runs Q/DQ nodes wherever they are (its own form is only its fastest)."""
        return []

    def available(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return str(MissingDependency("onnxruntime"))
        return None

    def compile(self, onnx_path, target, precision, out_dir, *, batch=1, **opts) -> dict:
        """ONNX Runtime runs the ONNX itself: the artifact is the build's model.onnx (and its external data),
        checked to load."""
        import onnx

        from edgecnn.core.onnx_utils import external_files

        dest = Path(out_dir) / "model.onnx"
        if precision == "fp16":
            artifact = {"file": dest.name, "fp16": write_fp16(onnx_path, dest)}
        else:
            if Path(onnx_path).resolve() != dest.resolve():
                shutil.copyfile(onnx_path, dest)
            artifact = {"file": dest.name, **({"int8": prepare_int8(dest)} if precision == "int8" else {})}
        OrtRunner(dest)
        files = external_files(onnx.load(str(dest), load_external_data=False))
        return {**artifact, **({"files": files} if files else {})}

    def notes(self, build_dir, manifest: dict) -> list[str]:
        """An int8 build made for a VNNI CPU (full-range int8 weights) run on one without: say so."""
        import onnx

        isa = int8_isa()
        if manifest.get("precision") != "int8" or not isa["u8s8_saturates"]:
            return []
        n = full_range_weights(onnx.load(str(Path(build_dir) / manifest["artifact"]["file"])))
        if not n:
            return []
        return [f"this CPU ({', '.join(isa['flags']) or 'no AVX2'}; no VNNI) runs ONNX Runtime's u8 x s8 int8 kernels "
                f"with VPMADDUBSW, which saturates: {n} weight tensors of this build use the full int8 range, so a "
                "deviation may come from the CPU, not the model. Recompile here (edgecnn compile stores them as uint8 "
                "for such CPUs) or quantize with --reduce-range"]

    def load(self, build_dir, manifest: dict, *, threads: int | None = None, **opts) -> OrtRunner:
        options = manifest["target"].get("options") or {}
        return OrtRunner(Path(build_dir) / manifest["artifact"]["file"], threads or options.get("threads", 0),
                         options.get("providers"), options.get("graph_optimization_level", "all"))


backend = OnnxRuntimeBackend()
