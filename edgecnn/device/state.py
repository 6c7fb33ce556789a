"""The state of the device a latency is measured on, read from sysfs and the vendors' own tools.

    cpufreq       per core: governor, current/min/max MHz (/sys/devices/system/cpu/cpu*/cpufreq)
    thermal       every thermal zone in degrees C (/sys/class/thermal/thermal_zone*)
    raspberry_pi  vcgencmd get_throttled (decoded), measure_clock arm, measure_temp
    jetson        nvpmodel -q (power mode), jetson_clocks --show (locked?), GPU devfreq, EMC, one tegrastats line
    nvidia_smi    per GPU: P-state, power draw and limit, SM/memory clocks, temperature

A fact that cannot be read is {"unavailable": "<why>"}, never left out. Standard library only: a board's
edgecnn RPC server imports this with nothing but Python and the TVM runtime installed.
"""

import os
import re
import select
import shutil
import socket
import subprocess
from pathlib import Path

TOOL_TIMEOUT = 10.0  # seconds for one vendor tool (nvpmodel can be slow under load)
THROTTLE_BITS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit"}
JETSON_GPUS = ("gpu", "gv11b", "ga10b", "gp10b", "gb10b")  # devfreq names of Jetson iGPUs (Orin, Xavier, TX2)
EMC_RATE = ("sys/kernel/debug/bpmp/debug/clk/emc/rate", "sys/kernel/debug/clk/emc/clk_rate")  # Hz, root only


def unavailable(why: str) -> dict:
    return {"unavailable": why}


def os_reason(e: OSError) -> str:
    return f"{(e.strerror or type(e).__name__).lower()}: {e.filename}" if e.filename else str(e)


def run_tool(*args: str) -> tuple[str | None, str | None]:
    """(stdout, None) of a vendor tool, or (None, why it gave nothing)."""
    if not shutil.which(args[0]):
        return None, f"{args[0]} not found on PATH"
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"{' '.join(args)} did not answer within {TOOL_TIMEOUT:g} s"
    except OSError as e:
        return None, f"{' '.join(args)}: {os_reason(e)}"
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return None, f"{' '.join(args)} failed (exit {proc.returncode}{': ' + said[-1] if said else ''})"
    return proc.stdout, None


def read_mhz(path: Path, per_mhz: float) -> float:
    return round(int(path.read_text().split()[0]) / per_mhz, 1)


def cpufreq(root: Path) -> dict:
    cpus = sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*"), key=lambda p: int(p.name[3:]))
    cores = {p.name: core_freq(p) for p in cpus if (p / "cpufreq").is_dir()}
    if not cores:
        return unavailable("no cpufreq in /sys/devices/system/cpu/cpu*/cpufreq (a virtual machine, or a "
                           "kernel without CPU frequency scaling)")
    return cores


def core_freq(cpu: Path) -> dict:
    freq = cpu / "cpufreq"
    try:
        out = {"governor": (freq / "scaling_governor").read_text().strip(),
               **{f"{k}_mhz": read_mhz(freq / f"scaling_{k}_freq", 1e3) for k in ("cur", "min", "max")}}
    except (OSError, ValueError, IndexError) as e:
        return unavailable(os_reason(e) if isinstance(e, OSError) else f"unreadable cpufreq in {freq}")
    if (cpu / "online").exists():
        out["online"] = (cpu / "online").read_text().strip() == "1"
    return out


def thermal(root: Path) -> dict:
    zones = sorted((root / "sys/class/thermal").glob("thermal_zone*"), key=lambda p: int(p.name[12:] or 0))
    if not zones:
        return unavailable("no thermal zones in /sys/class/thermal")
    temps = {}
    for zone in zones:
        try:
            name = (zone / "type").read_text().strip()
        except OSError:
            name = zone.name
        name = name if name not in temps else f"{name} ({zone.name})"
        try:
            temps[name] = int((zone / "temp").read_text().strip()) / 1000
        except (OSError, ValueError) as e:  # Jetson zones of powered-off engines refuse reads
            temps[name] = unavailable(os_reason(e) if isinstance(e, OSError) else "not a number")
    return temps


def parse_throttled(text: str) -> dict:
    """`vcgencmd get_throttled` (throttled=0x50005): the flags active now and those seen since boot."""
    value = int(text.strip().split("=", 1)[1], 16)
    return {"throttled": hex(value), "now": [n for b, n in THROTTLE_BITS.items() if value >> b & 1],
            "since_boot": [n for b, n in THROTTLE_BITS.items() if value >> (b + 16) & 1]}


def parse_measure_clock(text: str) -> float:
    """`vcgencmd measure_clock arm` (frequency(48)=1500345728) -> MHz."""
    return round(int(text.strip().split("=", 1)[1]) / 1e6, 1)


def parse_measure_temp(text: str) -> float:
    """`vcgencmd measure_temp` (temp=45.6'C) -> degrees C."""
    return float(re.search(r"temp=(-?[\d.]+)", text).group(1))


def raspberry_pi() -> dict:
    readings = {"get_throttled": parse_throttled, "measure_clock arm": parse_measure_clock,
                "measure_temp": parse_measure_temp}
    out = {}
    for command, parse in readings.items():
        text, why = run_tool("vcgencmd", *command.split())
        if why and "not found" in why:
            return unavailable("not a Raspberry Pi: no vcgencmd on PATH (Raspberry Pi OS: raspi-utils)")
        try:
            out[command] = parse(text) if text is not None else unavailable(why)
        except (ValueError, IndexError, AttributeError):
            out[command] = unavailable(f"unexpected vcgencmd {command} output: {text.strip()[:80]!r}")
    return {"throttled": out["get_throttled"], "arm_mhz": out["measure_clock arm"], "temp_c": out["measure_temp"]}


def parse_nvpmodel(text: str) -> dict:
    """`nvpmodel -q`: 'NV Power Mode: MAXN' then the mode's number on the next line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "NV Power Mode:" in line:
            mode = {"name": line.split("NV Power Mode:", 1)[1].strip()}
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                mode["id"] = int(lines[i + 1])
            return mode
    raise ValueError("no 'NV Power Mode:' line")


def _min_max_cur(values, per_mhz: float) -> dict:
    return {k: round(int(v) / per_mhz, 1) for k, v in zip(("min_mhz", "max_mhz", "cur_mhz"), values)}


def parse_jetson_clocks(text: str) -> dict:
    """`jetson_clocks --show`: CPU (kHz), GPU and EMC (Hz) min/max/current; locked = pinned at one clock."""
    cpus = {f"cpu{m[0]}": {"online": m[1] == "1", "governor": m[2], **_min_max_cur(m[3:6], 1e3)}
            for m in re.findall(r"^\s*cpu(\d+):\s+Online=(\d)\s+Governor=(\S+)\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+"
                                r"CurrentFreq=(\d+)", text, re.M)}
    gpu = re.search(r"^\s*(?:GPU|gpu-gpc-0)\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", text, re.M)
    emc = re.search(r"^\s*EMC\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)(?:\s+FreqOverride=(\d))?",
                    text, re.M)
    if not cpus and not gpu:
        raise ValueError("no cpu or GPU lines")
    out = {"cpus": cpus, "gpu": _min_max_cur(gpu.groups(), 1e6) if gpu else None,
           "emc": _min_max_cur(emc.groups()[:3], 1e6) if emc else None}
    pinned = [c["min_mhz"] == c["max_mhz"] for c in cpus.values() if c["online"]]
    pinned += [out["gpu"]["min_mhz"] == out["gpu"]["max_mhz"]] if gpu else []
    pinned += [emc[4] == "1" or out["emc"]["min_mhz"] == out["emc"]["max_mhz"]] if emc else []
    out["locked"] = all(pinned)
    return out


def parse_tegrastats(line: str) -> dict:
    """One `tegrastats` line (JetPack 4-6): CPU load@MHz, EMC and GR3D (GPU) load@MHz, temperatures, rails mW."""
    cpu = re.search(r"CPU \[([^\]]*)\]", line)
    emc = re.search(r"EMC_FREQ (\d+)%(?:@(\d+))?", line)
    gr3d = re.search(r"GR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?", line)
    out = {"cpu": [core_load(c) for c in cpu[1].split(",")] if cpu else [],
           "emc": {"load_pct": int(emc[1]), "mhz": int(emc[2]) if emc[2] else None} if emc else None,
           "gpu": {"load_pct": int(gr3d[1]), "mhz": max(map(int, gr3d[2].split(","))) if gr3d[2] else None}
           if gr3d else None,
           "temps_c": {n: float(t) for n, t in re.findall(r"\b(\w+)@(-?[\d.]+)C\b", line)},
           "rails_mw": {n: int(cur) for n, cur, _ in re.findall(r"\b(\w+) (\d+)(?:mW)?/(\d+)(?:mW)?\b", line)
                        if n != "NC"}}
    if not (out["cpu"] or out["rails_mw"]):
        raise ValueError(f"not a tegrastats line: {line[:80]!r}")
    return out


def core_load(text: str) -> dict | str:
    m = re.match(r"(\d+)%(?:@(\d+))?", text.strip())
    return {"load_pct": int(m[1]), "mhz": int(m[2]) if m[2] else None} if m else text.strip()


def tool_fact(parse, *args: str) -> dict:
    text, why = run_tool(*args)
    if text is None:
        return unavailable(why + ("; it needs root (sudo)" if args[0] == "jetson_clocks" else ""))
    try:
        return parse(text)
    except (ValueError, IndexError, AttributeError) as e:
        return unavailable(f"unexpected {' '.join(args)} output ({e})")


def is_jetson(root: Path) -> bool:
    return (root / "etc/nv_tegra_release").exists() or any(shutil.which(t) for t in ("nvpmodel", "tegrastats"))


def jetson(root: Path) -> dict:
    if not is_jetson(root):
        return unavailable("not a Jetson: no /etc/nv_tegra_release, nvpmodel or tegrastats")
    return {"power_mode": tool_fact(parse_nvpmodel, "nvpmodel", "-q"),
            "jetson_clocks": tool_fact(parse_jetson_clocks, "jetson_clocks", "--show"),
            "gpu_devfreq": gpu_devfreq(root), "emc_mhz": emc_rate(root),
            "tegrastats": tegrastats_now()}


def first_line(*args: str, timeout: float = TOOL_TIMEOUT) -> tuple[str | None, str | None]:
    """The first line a streaming tool (tegrastats) prints, then stop it."""
    if not shutil.which(args[0]):
        return None, f"{args[0]} not found on PATH"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
    finally:
        proc.kill()
        err = proc.communicate()[1].strip()
    if not line.strip():
        return None, f"{' '.join(args)} printed nothing{' (' + err.splitlines()[-1] + ')' if err else ''}"
    return line, None


def tegrastats_now() -> dict:
    line, why = first_line("tegrastats", "--interval", "100")
    if line is None:
        return unavailable(why)
    try:
        return parse_tegrastats(line)
    except ValueError as e:
        return unavailable(str(e))


def gpu_devfreq(root: Path) -> dict:
    found = [d for d in sorted((root / "sys/class/devfreq").glob("*")) if d.name.split(".")[-1] in JETSON_GPUS]
    if not found:
        return unavailable("no Jetson GPU in /sys/class/devfreq")
    d = found[0]
    try:
        return {"device": d.name, "governor": (d / "governor").read_text().strip(),
                **{f"{k}_mhz": read_mhz(d / f"{k}_freq", 1e6) for k in ("cur", "min", "max")}}
    except (OSError, ValueError) as e:
        return unavailable(os_reason(e) if isinstance(e, OSError) else f"unreadable devfreq in {d}")


def emc_rate(root: Path) -> float | dict:
    reasons = []
    for rel in EMC_RATE:
        try:
            return read_mhz(root / rel, 1e6)
        except OSError as e:
            reasons.append(os_reason(e))
    return unavailable(f"EMC clock in debugfs needs root: {reasons[0]}")


def parse_nvidia_smi(text: str) -> list[dict]:
    """`nvidia-smi --query-gpu=index,name,pstate,power.draw,power.limit,clocks.sm,clocks.mem,temperature.gpu
    --format=csv,noheader,nounits`: one GPU per line ('[N/A]' where the GPU does not say)."""
    def number(v):
        try:
            return float(v)
        except ValueError:
            return None

    gpus = []
    for line in filter(str.strip, text.splitlines()):
        index, name, pstate, *values = [v.strip() for v in line.split(",")]
        keys = ("power_w", "power_limit_w", "sm_mhz", "mem_mhz", "temp_c")
        gpus.append({"index": int(index), "name": name, "pstate": pstate, **dict(zip(keys, map(number, values)))})
    return gpus


NVIDIA_QUERY = ("nvidia-smi", "--query-gpu=index,name,pstate,power.draw,power.limit,clocks.sm,clocks.mem,"
                "temperature.gpu", "--format=csv,noheader,nounits")


def nvidia_gpus() -> list | dict:
    if not shutil.which("nvidia-smi"):
        return unavailable("no NVIDIA GPU driver here (nvidia-smi not found)")
    return tool_fact(parse_nvidia_smi, *NVIDIA_QUERY)


def read(root: str | Path = "/") -> dict:
    """Everything above, now. `root` is the file-system root the sysfs paths are read under."""
    root = Path(root)
    return {"host": socket.gethostname(), "pid": os.getpid(), "cpufreq": cpufreq(root), "thermal": thermal(root),
            "raspberry_pi": raspberry_pi(), "jetson": jetson(root), "nvidia_smi": nvidia_gpus()}
