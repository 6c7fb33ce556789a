"""Power while a benchmark runs (so energy per inference), from whatever sensor the device exposes.

    INA3221 rails   Jetson (JetPack 5/6): /sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in{N}_label, in{N}_input
                    (mV) and curr{N}_input (mA), polled every 100 ms
    tegrastats      the same rails, one line per 100 ms, where hwmon has none (JetPack 4)
    RAPL            x86: /sys/class/powercap/intel-rapl:N/energy_uj, a counter read at start and stop
    nvidia-smi      power.draw of each GPU, streamed every 100 ms (-lms)

A Meter spans a subject's warm-up and timed runs at one batch size; bench turns its mean power into
energy per run (mean W x mean latency). Standard library only (it runs on boards, see state.py).
"""

import statistics
import subprocess
import threading
import time
from pathlib import Path

from edgecnn.device import state

INTERVAL_S = 0.1
MODULE_INPUT = ("VDD_IN", "POM_5V_IN")  # a Jetson module's input rail: the whole module
RAIL_DIRS = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"


def ina3221_rails(root: Path) -> dict[str, tuple[Path, Path]]:
    """Rail label -> (bus voltage file in mV, current file in mA); skips unconnected (NC) inputs and in7,
    the driver's sum of shunt voltages."""
    rails = {}
    for hwmon in sorted(root.glob(RAIL_DIRS)):
        for label in sorted(hwmon.glob("in*_label")):
            n = label.name[2:].split("_")[0]
            try:
                name = label.read_text().strip()
            except OSError:
                continue
            if n != "7" and not name.startswith("NC"):
                rails[name] = (hwmon / f"in{n}_input", hwmon / f"curr{n}_input")
    return rails


def rail_watts(rails: dict) -> dict[str, float]:
    watts = {}
    for name, (volts, amps) in rails.items():
        try:
            watts[f"{name} (INA3221)"] = int(volts.read_text()) * int(amps.read_text()) / 1e6
        except (OSError, ValueError):  # a rail that fails one read: that sample goes without it
            pass
    return watts


def rapl_zones(root: Path) -> tuple[dict[str, Path], str | None]:
    """Top-level RAPL zones (packages, psys; their sub-zones are inside them) -> folder, or why none."""
    base = root / "sys/class/powercap"
    zones = {(z / "name").read_text().strip(): z for z in sorted(base.glob("intel-rapl:*")) if z.name.count(":") == 1}
    if not zones:
        return {}, ("no RAPL zones in /sys/class/powercap (not x86, or the intel_rapl driver is not loaded)")
    try:
        for z in zones.values():
            int((z / "energy_uj").read_text())
    except PermissionError:
        return {}, ("RAPL energy_uj is readable by root only (Linux >= 5.10): run as root or "
                    "sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj")
    except (OSError, ValueError) as e:
        return {}, f"RAPL unreadable ({state.os_reason(e) if isinstance(e, OSError) else e})"
    return zones, None


def rapl_energy(zones: dict[str, Path]) -> dict[str, tuple[int, int]]:
    return {n: (int((z / "energy_uj").read_text()), int((z / "max_energy_range_uj").read_text()))
            for n, z in zones.items()}


class Sampler:
    """Watts per source, in a thread: polled from `read()` every interval, or parsed from a streaming tool."""

    def __init__(self, *, read=None, command=None, parse=None):
        self.samples: dict[str, list[float]] = {}
        self.stopped = threading.Event()
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True) if command else None
        self.read, self.parse = read, parse
        if read:
            self.add(read())  # a first sample now, a last at stop: a short window still has two
        self.thread = threading.Thread(target=self.poll if read else self.stream, daemon=True)
        self.thread.start()

    def add(self, watts: dict[str, float]) -> None:
        for name, w in watts.items():
            self.samples.setdefault(name, []).append(w)

    def poll(self) -> None:
        while not self.stopped.wait(INTERVAL_S):
            self.add(self.read())

    def stream(self) -> None:
        for line in self.proc.stdout:
            try:
                self.add(self.parse(line))
            except (ValueError, IndexError):  # a header, or '[N/A]' where a GPU reports no power
                pass

    def stop(self) -> dict[str, list[float]]:
        self.stopped.set()
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.thread.join(timeout=5)
        if self.read:
            self.add(self.read())
        return self.samples


def tegrastats_watts(line: str) -> dict[str, float]:
    return {f"{n} (tegrastats)": mw / 1e3 for n, mw in state.parse_tegrastats(line)["rails_mw"].items()}


def nvidia_watts(line: str) -> dict[str, float]:
    index, watts = line.split(",")
    return {f"GPU {index.strip()} (nvidia-smi)": float(watts)}


class Meter:
    """start() ... stop() -> {"window_s", "sources": {name: {"kind", "mean_w", ...}}, "mean_w", "of"}, or
    {"unavailable": why} when the device has no readable power sensor."""

    def __init__(self, root: str | Path = "/"):
        self.root = Path(root)
        self.samplers, self.rapl, self.reasons = [], {}, []

    def start(self) -> None:
        self.t0, self.samplers, self.reasons = time.monotonic(), [], []
        rails = ina3221_rails(self.root)
        if rails:
            self.samplers.append(("rail", "INA3221", Sampler(read=lambda: rail_watts(rails))))
        elif state.is_jetson(self.root) and state.shutil.which("tegrastats"):
            self.samplers.append(("rail", "tegrastats", Sampler(command=["tegrastats", "--interval", "100"],
                                                                parse=tegrastats_watts)))
        else:
            self.reasons.append("no INA3221 rails in /sys/bus/i2c/drivers/ina3221 and no tegrastats (not a Jetson)")
        zones, why = rapl_zones(self.root)
        self.rapl = (zones, rapl_energy(zones)) if zones else {}
        self.reasons += [why] if why else []
        if state.shutil.which("nvidia-smi"):
            self.samplers.append(("gpu", "nvidia-smi", Sampler(command=["nvidia-smi", "--query-gpu=index,power.draw",
                                                                        "--format=csv,noheader,nounits", "-lms",
                                                                        "100"], parse=nvidia_watts)))
        else:
            self.reasons.append("no nvidia-smi")

    def stop(self) -> dict:
        sources = {}
        window = time.monotonic() - self.t0
        for kind, label, sampler in self.samplers:
            samples = sampler.stop()
            if not samples:
                self.reasons.append(f"{label} gave no reading in {window:.2f} s")
            for name, watts in samples.items():
                sources[name] = {"kind": kind, "mean_w": statistics.fmean(watts), "samples": len(watts)}
        if self.rapl:
            zones, before = self.rapl
            for name, (uj, wrap) in rapl_energy(zones).items():
                joules = ((uj - before[name][0]) % wrap) / 1e6  # the counter wraps at max_energy_range_uj
                sources[f"{name} (RAPL)"] = {"kind": "rapl", "mean_w": joules / window, "energy_j": joules}
        if not sources:
            return state.unavailable("no power sensor readable: " + "; ".join(self.reasons))
        total, of = total_power(sources)
        return {"window_s": round(window, 3), "sources": sources, "mean_w": total, "of": of,
                **({"not_read": self.reasons} if self.reasons else {})}


def total_power(sources: dict) -> tuple[float, str]:
    """The power a run costs: a Jetson's module input (else its rails summed); else CPU packages + GPUs."""
    rails = {n: s["mean_w"] for n, s in sources.items() if s["kind"] == "rail"}
    module = [n for n in rails if n.split(" (")[0] in MODULE_INPUT]
    if module:
        return rails[module[0]], f"module input {module[0]}"
    if rails:
        return sum(rails.values()), "sum of the rails " + ", ".join(rails)
    rapl = {n: s["mean_w"] for n, s in sources.items() if s["kind"] == "rapl"}
    cpu = {n: w for n, w in rapl.items() if n.startswith("psys")} or rapl  # psys: the whole platform
    gpus = {n: s["mean_w"] for n, s in sources.items() if s["kind"] == "gpu"}
    return sum(cpu.values()) + sum(gpus.values()), " + ".join([*cpu, *gpus])
