"""A tuning database's record (`tune.json`): what its schedules were measured for, and the check
`edgecnn compile --tune-db` makes before applying them (same CPU, target, graph, model, batch, TVM)."""

import json
from importlib import metadata
from pathlib import Path

from edgecnn.backends.tvm.build import require_tvm
from edgecnn.backends.tvm.passes import graph_options
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import sha256

RECORD, SCHEDULES = "tune.json", "schedules.json"
FORMAT, VERSION = "edgecnn.tunedb", 2  # 2: schedule-rule parameters (1 held MetaSchedule records)
DB_FILES = (SCHEDULES,)
# CPU features that change which code LLVM emits and so which schedules win
CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx_vnni", "amx_tile", "amx_int8", "asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")


def host_cpu() -> dict:
    """This machine's CPU as tuning sees it: LLVM's name for it, the model name, the flags that matter."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {"llvm_cpu": require_tvm().target.codegen.llvm_get_system_cpu(),
            "model_name": info.get("model name") or info.get("CPU part", "unknown"),
            "flags": sorted(flags.intersection(CPU_FLAGS))}


def tvm_versions() -> dict:
    return {name: metadata.version(name) for name in ("apache-tvm", "apache-tvm-ffi")}


def expected(onnx_path: Path, target, spec: dict, batch: int) -> dict:
    """What a database must have been tuned for to serve this model on this target here."""
    return {"model": {"sha256": sha256(onnx_path), "batch": batch},
            "target": {"name": target.name, "tvm": spec, "graph": graph_options(target)},
            "tvm": tvm_versions()}


def read_record(db: Path) -> dict:
    try:
        record = json.loads((db / RECORD).read_text())
    except FileNotFoundError:
        raise EdgecnnError(f"{db} is not an edgecnn tuning database (no {RECORD}): create it with "
                           f"edgecnn tune MODEL.onnx --target T --db {db}") from None
    except ValueError as e:
        raise EdgecnnError(f"{db / RECORD} is corrupt ({e}): re-tune with edgecnn tune") from None
    if record.get("format") != FORMAT or record.get("version") != VERSION:
        raise EdgecnnError(f"{db / RECORD}: unsupported tuning record {record.get('format')} "
                           f"v{record.get('version')} (this edgecnn reads {FORMAT} v{VERSION})")
    missing = [f for f in DB_FILES if not (db / f).is_file()]
    if missing:
        raise EdgecnnError(f"{db} is incomplete ({missing[0]} is missing): re-tune with edgecnn tune")
    return record


def mismatch(record: dict, want: dict) -> str | None:
    """Why the database cannot serve `want` (one phrase), or None."""
    got_t, want_t = record["target"], want["target"]
    if got_t["tvm"] != want_t["tvm"] or got_t["graph"] != want_t["graph"]:
        got, now = {**got_t["tvm"], **got_t["graph"]}, {**want_t["tvm"], **want_t["graph"]}
        what = ", ".join(f"{k} {got.get(k)} vs {now.get(k)}" for k in sorted({*got, *now}) if got.get(k) != now.get(k))
        return f"was tuned for target '{got_t['name']}' with another TVM target ({what})"
    if record["model"] != want["model"]:
        return (f"was tuned for another model (sha256 {record['model']['sha256'][:12]}, batch "
                f"{record['model']['batch']}; this one is {want['model']['sha256'][:12]}, batch {want['model']['batch']})")
    if record["tvm"] != want["tvm"]:
        return f"was tuned with {record['tvm']}, this is {want['tvm']}"
    cpu = record.get("cpu", {})
    if record.get("measured_on") == "local" and cpu != host_cpu():
        here = host_cpu()
        return (f"was tuned on another CPU ({cpu.get('model_name')}, LLVM {cpu.get('llvm_cpu')}; this machine: "
                f"{here['model_name']}, LLVM {here['llvm_cpu']})")
    return None


def check(db: Path, want: dict) -> dict:
    """The database's record, or EdgecnnError saying in one line why it does not apply here."""
    record = read_record(db)
    try:
        why = mismatch(record, want)
    except (KeyError, TypeError, AttributeError):
        raise EdgecnnError(f"{db / RECORD} lacks fields this edgecnn records: re-tune with edgecnn tune") from None
    if why:
        raise EdgecnnError(f"tuning database {db} {why}: re-tune for this one with edgecnn tune MODEL.onnx "
                           f"--target {want['target']['name']} --db NEW_DIR")
    return record
