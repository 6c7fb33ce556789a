"""bench --lock-clocks: pin the clocks where the device lets us, and put them back afterwards.

    CPU governor   every cpufreq policy set to 'performance' (/sys/devices/system/cpu/cpufreq/policy*; root)
    jetson_clocks  a Jetson's CPU, GPU and EMC at the power mode's maximum (its settings stored and restored)

lock() says what it did, what it could not do and why; restore() takes its record back.
Standard library only (it runs on boards, see state.py).
"""

import os
import shutil
import tempfile
from pathlib import Path

from edgecnn.device import state


def set_governors(root: Path) -> tuple[list, list, dict]:
    policies = sorted((root / "sys/devices/system/cpu/cpufreq").glob("policy*"))
    if not policies:
        return [], ["CPU governor: no cpufreq policies in /sys/devices/system/cpu/cpufreq"], {}
    changed, failed = {}, []
    for policy in policies:
        governor = policy / "scaling_governor"
        try:
            was = governor.read_text().strip()
            if was != "performance":
                if "performance" not in (policy / "scaling_available_governors").read_text().split():
                    failed.append(f"CPU governor of {policy.name}: no 'performance' governor in this kernel")
                    continue
                governor.write_text("performance")
                changed[str(governor)] = was
        except OSError as e:
            failed.append(f"CPU governor of {policy.name}: {state.os_reason(e)} (writing it needs root)")
    if changed:
        done = [f"CPU governor 'performance' on {len(changed)} of {len(policies)} policies "
                f"(was {', '.join(sorted(set(changed.values())))})"]
    else:
        done = [] if failed else [f"CPU governor already 'performance' on {len(policies)} policies"]
    return done, failed, changed


def run_jetson_clocks() -> tuple[list, list, str | None]:
    if not shutil.which("jetson_clocks"):
        return [], [], None
    fd, store = tempfile.mkstemp(prefix="edgecnn-jetson-clocks-")
    os.close(fd)
    for args in (("jetson_clocks", "--store", store), ("jetson_clocks",)):
        _, why = state.run_tool(*args)
        if why:
            os.unlink(store)
            return [], [f"jetson_clocks: {why} (it needs root: sudo)"], None
    return ["jetson_clocks: CPU, GPU and EMC at the power mode's maximum"], [], store


def lock(root: str | Path = "/") -> dict:
    """-> {"done": [...], "not_done": [...], "restore": what restore() needs}."""
    jetson_done, jetson_failed, store = run_jetson_clocks()
    done, failed, governors = set_governors(Path(root))
    return {"done": jetson_done + done, "not_done": jetson_failed + failed,
            "restore": {"governors": governors, "jetson_clocks": store}}


def restore(record: dict) -> dict:
    """Undo lock(): governors back, jetson_clocks --restore; -> {"restored": [...], "failed": [...]}."""
    undo, restored, failed = record.get("restore") or {}, [], []
    for path, was in undo.get("governors", {}).items():
        try:
            Path(path).write_text(was)
            restored.append(f"{Path(path).parent.name} governor {was}")
        except OSError as e:
            failed.append(f"{path}: {state.os_reason(e)}")
    if undo.get("jetson_clocks"):
        _, why = state.run_tool("jetson_clocks", "--restore", undo["jetson_clocks"])
        if why:
            failed.append(f"jetson_clocks --restore: {why}")
        else:
            restored.append("jetson_clocks settings")
        Path(undo["jetson_clocks"]).unlink(missing_ok=True)
    return {"restored": restored, "failed": failed}
