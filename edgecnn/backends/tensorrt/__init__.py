"""TensorRT (optional extra `[tensorrt]`; JetPack's on a Jetson): ONNX -> engine on the device, run it.

An engine is tied to the TensorRT version and GPU that built it, so a build directory is made in two steps:
- `compile` (anywhere, no TensorRT needed) writes the prepared ONNX (target opset, Q/DQ lint passed),
  the builder settings (trt_settings.json) and the manifest, and prints the equivalent trtexec command;
- the engine is built where TensorRT and the target GPU are: by compile itself when this machine is the
  target, else by `edgecnn build BUILD_DIR` on the device or at first load, which record the TensorRT
  version and GPU in the manifest. An engine from another TensorRT or GPU is refused before TensorRT sees it.

    device.py  what ties an engine to a machine      compat.py  TensorRT 8.x / 10.x / 11.x differences
    onnx.py    the ONNX TensorRT gets                  qdqlint.py TensorRT's Q/DQ rules
    build.py   prepare and build                       runner.py  run an engine (cuda-python buffers)
"""

from pathlib import Path

from edgecnn.backends.base import Backend, QdqForm
from edgecnn.backends.tensorrt import build, device, qdqlint
from edgecnn.core.onnx_utils import WEIGHTED
from edgecnn.core.progress import console

QDQ_OPS = (*WEIGHTED, "Add")  # TensorRT fuses Q/DQ on these inputs (both inputs of a residual Add)


class TensorRTBackend(Backend):
    name = "tensorrt"
    packages = ("tensorrt", "cuda-python")
    matrix_target = "nvidia-gpu"
    int8_form = "tensorrt"
    qdq_form = QdqForm(symmetric=True, op_types=QDQ_OPS, strict=True,
                       options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                "OpTypesToExcludeOutputQuantization": list(QDQ_OPS)})

    def available(self) -> str | None:
        return device.available()

    def lint_qdq(self, model) -> list:
        return qdqlint.lint(model)

    def compile(self, onnx_path, target, precision, out_dir, *, batch: int | None = 1, dla_core=None, **opts) -> dict:
        """Prepare model.onnx + trt_settings.json; build the engine too when this machine is the target."""
        cfg = device.target_config(target.raw)
        artifact = build.prepare(Path(onnx_path), cfg, precision, Path(out_dir), name=target.name, batch=batch,
                                 dla_core=dla_core)
        reason = device.available()
        if reason is None:
            reason = device.mismatch(cfg, target.name, device.local_device(device.require_trt()))
        if reason is None:
            artifact["engine"] = build.build_engine(Path(out_dir), {"target": target.raw, "artifact": artifact})
            return artifact
        trtexec = f", or with trtexec, in BUILD_DIR:\n  {artifact['trtexec']}" if artifact.get("trtexec") else ""
        console.print(f"engine: not built on this machine ({reason}).\n  On the device: edgecnn build "
                      f"BUILD_DIR{trtexec}", markup=False, highlight=False, soft_wrap=True)
        return artifact

    def load(self, build_dir, manifest: dict, *, threads=None, dla_core=None, **opts):
        """The build's engine; built here first (and recorded in the manifest) when there is none yet."""
        from edgecnn.backends.tensorrt.runner import TrtRunner

        build_dir, art = Path(build_dir), manifest["artifact"]
        trt = device.require_trt()
        if not art.get("engine") or not (build_dir / art["file"]).is_file():
            build.build_and_record(build_dir, manifest, dla_core)
        device.check_engine(art["engine"], device.local_device(trt))
        return TrtRunner(build_dir / art["file"], art["engine"].get("dla_core"), art["profile"])

    def finish(self, build_dir, manifest: dict, *, dla_core=None, force: bool = False, timing_cache=None) -> str:
        """`edgecnn build`: the engine for this machine's TensorRT and GPU, unless it is up to date."""
        build_dir, art = Path(build_dir), manifest["artifact"]
        engine = art.get("engine")
        if engine and not force and dla_core is None and (build_dir / art["file"]).is_file():
            device.check_engine(engine, device.local_device(device.require_trt()))
            return (f"{build_dir}/{art['file']} is up to date (TensorRT {engine['tensorrt']}, {engine['gpu']}); "
                    "--force rebuilds it")
        rec = build.build_and_record(build_dir, manifest, dla_core, timing_cache)
        size = (build_dir / art["file"]).stat().st_size / 2**20
        where = f"DLA core {rec['dla_core']}" if rec["dla_core"] is not None else "GPU"
        return (f"built {build_dir}/{art['file']} ({size:.1f} MiB) in {rec['build_s']} s: TensorRT "
                f"{rec['tensorrt']}, {rec['gpu']} (sm {rec['sm']}), {rec['precision']} on the {where}")


backend = TensorRTBackend()
