"""The machine a latency was measured on: CPU, GPUs, load, tool versions, and process memory."""

import os
import platform
import subprocess
from pathlib import Path

from edgecnn.backends import tool_versions


def proc_status_mib(field: str) -> float | None:
    """VmRSS (now) or VmHWM (peak) of this process from /proc (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float | None:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child of a big
    # process would report its parent's peak
    peak = proc_status_mib("VmHWM")
    if peak is None:
        try:
            import resource
        except ImportError:  # Windows
            return None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if platform.system() == "Darwin" else 1024)
    return peak


def gpu_mib(pid: int) -> float | None:
    """GPU memory this process holds, per nvidia-smi (None without an NVIDIA GPU)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    used = [float(m) for p, m in (line.split(",") for line in out.splitlines() if "," in line) if int(p) == pid]
    return sum(used) if used else None


def system_info() -> dict:
    """CPU, GPUs, load and tool versions: the context a latency number needs."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith(("model name", "Model", "Hardware")))
    except (OSError, StopIteration):
        pass
    try:
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        gpus = []
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "gpus": gpus,
            "system": f"{platform.system()} {platform.release()}", "tools": tool_versions()}


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
