"""The device around each subject's timed runs: its state before and after, its power, optionally its
clocks locked and a wait until it is cool, and warnings when the state moved enough to distort latency.

A probe reads one device. `Probe` reads this machine; a runner on a board brings its own
(Runner.device_probe) with the same methods, JSON in and out (METHODS: what a board's server serves).
"""

import contextlib
import statistics
import time
from pathlib import Path

from edgecnn.device import clocks, power, state

METHODS = ("state", "meter_start", "meter_stop", "lock_clocks", "restore_clocks")
FREQ_MOVED = 0.10  # a clock that moved by more than this share of its maximum during the runs
TEMP_ROSE_C = 5.0  # a temperature that rose by this much
COOL_TIMEOUT_S, COOL_POLL_S = 600.0, 2.0
COLDEST_REAL_C = -40.0  # Jetson reports -256 C for the sensors of powered-off engines


class Probe:
    """This machine (or the file tree under `root`)."""

    def __init__(self, root: str | Path = "/"):
        self.root, self.meter = Path(root), power.Meter(root)

    def state(self) -> dict:
        return state.read(self.root)

    def meter_start(self) -> None:
        self.meter.start()

    def meter_stop(self) -> dict:
        return self.meter.stop()

    def lock_clocks(self) -> dict:
        return clocks.lock(self.root)

    def restore_clocks(self, record: dict) -> dict:
        return clocks.restore(record)


def known(fact) -> bool:
    return isinstance(fact, dict) and "unavailable" not in fact


def clock_mhz(state: dict) -> dict[str, tuple[float, float]]:
    """Clock name -> (current MHz, the MHz a move is measured against)."""
    out = {}
    cores = [c for c in state.get("cpufreq", {}).values() if known(c)]
    if cores:
        out["CPU (mean of cores)"] = (statistics.fmean(c["cur_mhz"] for c in cores), max(c["max_mhz"] for c in cores))
    pi = state.get("raspberry_pi", {})
    if known(pi) and isinstance(pi["arm_mhz"], float):
        out["Raspberry Pi arm"] = (pi["arm_mhz"], pi["arm_mhz"])
    jet = state.get("jetson", {})
    if known(jet):
        shown = jet["jetson_clocks"] if known(jet["jetson_clocks"]) else {}
        for name, fact in (("GPU", shown.get("gpu") or jet["gpu_devfreq"]), ("EMC", shown.get("emc"))):
            if known(fact):
                out[f"Jetson {name}"] = (fact["cur_mhz"], fact["max_mhz"])
        if "Jetson EMC" not in out and isinstance(jet["emc_mhz"], float):
            out["Jetson EMC"] = (jet["emc_mhz"], jet["emc_mhz"])
    for gpu in state.get("nvidia_smi", []) if isinstance(state.get("nvidia_smi"), list) else []:
        if gpu.get("sm_mhz"):
            out[f"GPU {gpu['index']} SM"] = (gpu["sm_mhz"], gpu["sm_mhz"])
    return out


def temperatures(state: dict) -> dict[str, float]:
    temps = {k: v for k, v in state.get("thermal", {}).items() if isinstance(v, float) and v > COLDEST_REAL_C}
    pi = state.get("raspberry_pi", {})
    if known(pi) and isinstance(pi["temp_c"], float):
        temps["vcgencmd"] = pi["temp_c"]
    for gpu in state.get("nvidia_smi", []) if isinstance(state.get("nvidia_smi"), list) else []:
        if gpu.get("temp_c") is not None:
            temps[f"GPU {gpu['index']}"] = gpu["temp_c"]
    return temps


def hottest(state: dict) -> tuple[str, float] | None:
    temps = temperatures(state)
    return max(temps.items(), key=lambda kv: kv[1]) if temps else None


def drift(before: dict, after: dict) -> list[str]:
    """Warnings: clocks that moved, temperatures that rose, throttling, a power mode that changed."""
    out = []
    b_clk, a_clk = clock_mhz(before), clock_mhz(after)
    for name in sorted(b_clk.keys() & a_clk.keys()):
        (was, ref), now = b_clk[name], a_clk[name][0]
        if abs(now - was) > FREQ_MOVED * max(ref, a_clk[name][1]):
            out.append(f"{name} clock moved {was:.0f} -> {now:.0f} MHz during the runs: the latencies mix clock "
                       "speeds (bench --lock-clocks, or lock them: cpupower frequency-set -g performance, "
                       "sudo jetson_clocks)")
    b_t, a_t = temperatures(before), temperatures(after)
    rises = {z: a_t[z] - b_t[z] for z in b_t.keys() & a_t.keys()}
    if rises and max(rises.values()) >= TEMP_ROSE_C:
        zone = max(rises, key=rises.get)
        out.append(f"temperature of {zone} rose {b_t[zone]:.1f} -> {a_t[zone]:.1f} C during the runs: the device "
                   "may throttle as it heats (bench --wait-cool C, better cooling, or shorter --seconds)")
    out += throttling(before.get("raspberry_pi", {}), after.get("raspberry_pi", {}))
    modes = [s["jetson"]["power_mode"] if known(s.get("jetson")) else None for s in (before, after)]
    if all(known(m) for m in modes) and modes[0]["name"] != modes[1]["name"]:
        out.append(f"Jetson power mode changed {modes[0]['name']} -> {modes[1]['name']} during the runs")
    return out


def throttling(before: dict, after: dict) -> list[str]:
    if not (known(after) and known(after["throttled"])):
        return []
    now, seen = after["throttled"]["now"], after["throttled"]["since_boot"]
    code = after["throttled"]["throttled"]
    out = [f"Raspberry Pi is {', '.join(now)} now (vcgencmd get_throttled {code})"] if now else []
    if not (known(before) and known(before["throttled"])):  # cannot tell what is new
        return out
    new = [f for f in seen if f not in before["throttled"]["since_boot"]]
    if new:
        out.append(f"Raspberry Pi {', '.join(new)} happened during the runs (vcgencmd get_throttled {code}): "
                   "check the power supply and cooling")
    return out


def wait_cool(probe, target_c: float, *, timeout: float = COOL_TIMEOUT_S, poll: float = COOL_POLL_S) -> dict:
    """Poll the hottest sensor until it is at or below target_c (or `timeout` seconds passed)."""
    start, first = time.monotonic(), None
    while True:
        hot = hottest(probe.state())
        if hot is None:
            return state.unavailable("no temperature readable on this device: cannot wait for it to cool")
        first = first or hot
        waited = time.monotonic() - start
        if hot[1] <= target_c or waited >= timeout:
            return {"target_c": target_c, "start_c": first[1], "reached_c": hot[1], "sensor": hot[0],
                    "waited_s": round(waited, 1), "timed_out": hot[1] > target_c}
        time.sleep(poll)


def energy(meter: dict, stats: dict) -> dict:
    """Mean power x mean latency: the energy of one run (one batch) and of one image."""
    if not known(meter):
        return meter
    mj = meter["mean_w"] * stats["mean_ms"]
    return {**meter, "mj_per_run": mj, "mj_per_image": mj / stats["batch"]}


class Watch:
    """One subject's device record: lock clocks (optional), then per batch `with watch.batch(b):` (wait
    until cool, state before the first, power meter), then record(batches): the state after, clocks back."""

    def __init__(self, probe, *, lock: bool = False, cool_c: float | None = None):
        self.probe, self.cool_c = probe, cool_c
        self.before, self.meters, self.cooled = None, {}, {}
        self.locked = probe.lock_clocks() if lock else None

    @contextlib.contextmanager
    def batch(self, b: int):
        if self.cool_c is not None:
            self.cooled[str(b)] = wait_cool(self.probe, self.cool_c)
        if self.before is None:
            self.before = self.probe.state()
        self.probe.meter_start()
        try:
            yield
        finally:
            self.meters[str(b)] = self.probe.meter_stop()

    def restore(self) -> dict | None:
        locked, self.locked = self.locked, None
        return self.probe.restore_clocks(locked) if locked else None

    def record(self, batches: dict) -> dict:
        """The report's `device` section of this subject; `batches`: its statistics per batch size."""
        after = self.probe.state()
        clock = ({k: v for k, v in self.locked.items() if k != "restore"} | (self.restore() or {})
                 if self.locked else None)
        warnings = drift(self.before, after) if known(self.before) and known(after) else []
        warnings += [f"--lock-clocks: {why}" for why in (clock or {}).get("not_done", [])]
        warnings += [f"--lock-clocks: could not restore {what}" for what in (clock or {}).get("failed", [])]
        warnings += [f"--wait-cool {self.cool_c:g}: still {c['reached_c']:.1f} C ({c['sensor']}) after "
                     f"{c['waited_s']:g} s" for c in self.cooled.values() if c.get("timed_out")]
        warnings += list(dict.fromkeys(f"--wait-cool {self.cool_c:g}: {c['unavailable']}"
                                       for c in self.cooled.values() if "unavailable" in c))
        return {"before": self.before, "after": after, "warnings": warnings, "clocks": clock,
                "cooled": self.cooled or None,
                "power": {b: energy(m, batches[b]) for b, m in self.meters.items() if b in batches}}


def brief(record: dict) -> dict:
    """What a manifest, a bundle and the console show of a subject's device record."""
    before, after = record.get("before") or {}, record.get("after") or {}
    out = {"warnings": record.get("warnings", []),
           "power": {b: {k: p[k] for k in ("mean_w", "mj_per_image", "of")} if known(p) else p
                     for b, p in (record.get("power") or {}).items()}}
    if not known(after):
        return {"unavailable": after.get("unavailable", "not read"), **out}
    cores = [c for c in after["cpufreq"].values() if known(c)] if known(after["cpufreq"]) else []
    cpu = [clock_mhz(s).get("CPU (mean of cores)", (None,))[0] for s in (before, after)]
    hot = [hottest(s) for s in (before, after)]
    out |= {"host": after.get("host"), "cpu_governor": ", ".join(sorted({c["governor"] for c in cores})) or None,
            "cpu_mhz": cpu if None not in cpu else None, "hottest_c": [h[1] for h in hot] if all(hot) else None,
            "hottest_sensor": hot[1][0] if hot[1] else None}
    jet, pi = after.get("jetson", {}), after.get("raspberry_pi", {})
    if known(jet):
        out["power_mode"] = jet["power_mode"].get("name")
        out["clocks_locked"] = jet["jetson_clocks"].get("locked")
    if known(pi) and known(pi["throttled"]):
        out["throttled"] = pi["throttled"]["throttled"]
    return out
