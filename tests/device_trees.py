"""Jetson and Raspberry Pi stand-ins: sysfs trees and vendor tools that print what the real ones print.

The outputs are copied from real devices (sources beside each). The tools are shell scripts on PATH; the
parsing code under test is edgecnn's own. They stand in for hardware this machine does not have.
"""

import os
import stat
from pathlib import Path

# JetPack 6 (L4T R36.4.3), Jetson Orin Nano Super: `sudo jetson_clocks --show` and `sudo nvpmodel -q`
# (a Jetson preflight report, 2026-06)
JP6_ORIN_NANO_CLOCKS = """\
SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super
Online CPUs: 0-5
cpu0:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=729600 IdleStates: WFI=1 c7=1 
cpu1:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=729600 IdleStates: WFI=1 c7=1 
cpu2:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=1190400 IdleStates: WFI=1 c7=1 
cpu3:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=729600 IdleStates: WFI=1 c7=1 
cpu4:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=1190400 IdleStates: WFI=1 c7=1 
cpu5:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=1190400 IdleStates: WFI=1 c7=1 
GPU MinFreq=306000000 MaxFreq=918000000 CurrentFreq=306000000
Active GPU TPCs: 4
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=2133000000 FreqOverride=0
FAN Dynamic Speed Control=nvfancontrol hwmon0_pwm1=69
NV Power Mode: 25W
"""
JP6_ORIN_NANO_NVPMODEL = "NV Power Mode: 25W\n1\n"
# JetPack 6, Orin Nano: `sudo tegrastats --interval 1000` (a robot's hardware audit, 2026-09), one line
JP6_ORIN_NANO_TEGRASTATS = (
    "09-12-2026 02:14:33 RAM 1484/3602MB (lfb 21x4MB) SWAP 436/14089MB (cached 7MB) "
    "CPU [3%@729,2%@729,1%@729,0%@729,1%@729,1%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305] "
    "NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@56.281C soc2@55.843C soc0@54.093C "
    "gpu@55.843C tj@56.281C soc1@56.187C VDD_IN 4428mW/4428mW VDD_CPU_GPU_CV 562mW/562mW VDD_SOC 1400mW/1400mW")

# JetPack 5.1, Jetson AGX Orin 64GB: `sudo jetson_clocks --show` and `sudo tegrastats` (catid.io, 2023-04)
JP5_AGX_ORIN_CLOCKS = """\
SOC family:tegra234  Machine:Jetson AGX Orin
Online CPUs: 0-11
""" + "".join(f"cpu{i}: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq={cur} "
              "IdleStates: WFI=1 c7=1 \n"
              for i, cur in zip((0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9),
                                (2201600, 2201600, 1113600, 1113600, 2201600, 1190400, 2201600, 2201600, 2188800,
                                 2112000, 2201600, 1190400))) + """\
GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=2133000000 FreqOverride=0
DLA0_CORE:   Online=1 MinFreq=0 MaxFreq=1600000000 CurrentFreq=1600000000
DLA0_FALCON: Online=1 MinFreq=0 MaxFreq=844800000 CurrentFreq=844800000
DLA1_CORE:   Online=1 MinFreq=0 MaxFreq=1600000000 CurrentFreq=1600000000
DLA1_FALCON: Online=1 MinFreq=0 MaxFreq=844800000 CurrentFreq=844800000
PVA0_VPS0: Online=1 MinFreq=0 MaxFreq=1152000000 CurrentFreq=1152000000
PVA0_AXI:  Online=1 MinFreq=0 MaxFreq=832000000 CurrentFreq=832000000
FAN Dynamic Speed control=active hwmon2_pwm1=55
NV Power Mode: MAXN
"""
JP5_AGX_ORIN_TEGRASTATS = (
    "04-24-2023 00:01:24 RAM 1282/62795MB (lfb 15152x4MB) SWAP 0/31398MB (cached 0MB) CPU [0%@729,0%@729,0%@729,"
    "0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@0 GR3D2_FREQ "
    "0%@0 VIC_FREQ 729 APE 174 CV0@-256C CPU@42.593C Tboard@32C SOC2@39.343C Tdiode@33.25C SOC0@39.375C CV1@-256C "
    "GPU@-256C tj@42.593C SOC1@40.468C CV2@-256C VDD_GPU_SOC 2399mW/2399mW VDD_CPU_CV 400mW/400mW VIN_SYS_5V0 "
    "4032mW/4032mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW")
# `nvpmodel -q` on JetPack 5 also prints the fan mode first (an Orin Nano, JetPack 5.1)
JP5_NVPMODEL = "NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n"
# After `sudo jetson_clocks` (a Jetson Nano, 2026-09): minimum = maximum = current, EMC overridden
LOCKED_NANO_CLOCKS = """\
SOC family:tegra210  Machine:NVIDIA Jetson Nano Developer Kit
Online CPUs: 0-3
cpu0: Online=1 Governor=schedutil MinFreq=1479000 MaxFreq=1479000 CurrentFreq=1479000 IdleStates: WFI=0 c7=0
GPU MinFreq=921600000 MaxFreq=921600000 CurrentFreq=921600000
EMC MinFreq=204000000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=1
Fan: PWM=0
NV Power Mode: MAXN
"""

# Raspberry Pi 4 (Raspberry Pi OS): vcgencmd's answers
PI4_CLOCK = "frequency(48)=1800457088\n"
PI4_TEMP = "temp=63.7'C\n"


def write(root: Path, rel: str, text) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n")
    return path


def tool(bin_dir: Path, name: str, script: str) -> Path:
    """A shell script called `name` in bin_dir (put bin_dir first on PATH)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def printing(bin_dir: Path, name: str, text: str) -> Path:
    """A tool that prints `text` (kept in a file beside it, so a test can change the answer)."""
    answer = write(bin_dir / "answers", name, text.rstrip("\n"))
    return tool(bin_dir, name, f'cat "{answer}"\n')


def streaming(bin_dir: Path, name: str, line: str) -> Path:
    """A tool that prints `line` every 0.1 s until killed (tegrastats, nvidia-smi -lms)."""
    answer = write(bin_dir / "answers", name, line)
    return tool(bin_dir, name, f'while true; do cat "{answer}"; sleep 0.1; done\n')


def cpus(root: Path, n: int, *, governor: str, khz: tuple[int, int, int], policies: bool = True) -> None:
    lo, hi, cur = khz
    for i in range(n):
        base = f"sys/devices/system/cpu/cpu{i}"
        for name, value in (("scaling_governor", governor), ("scaling_min_freq", lo), ("scaling_max_freq", hi),
                            ("scaling_cur_freq", cur)):
            write(root, f"{base}/cpufreq/{name}", value)
        write(root, f"{base}/online", 1)
        if policies:
            write(root, f"sys/devices/system/cpu/cpufreq/policy{i}/scaling_governor", governor)
            write(root, f"sys/devices/system/cpu/cpufreq/policy{i}/scaling_available_governors",
                  "ondemand userspace powersave performance schedutil")


def zones(root: Path, temps: dict) -> None:
    """Thermal zones by type; a None temperature is a zone whose reads fail (a powered-off engine's)."""
    for i, (name, c) in enumerate(temps.items()):
        write(root, f"sys/class/thermal/thermal_zone{i}/type", name)
        if c is None:
            (root / f"sys/class/thermal/thermal_zone{i}/temp").mkdir()  # reading it fails, as EINVAL does there
        else:
            write(root, f"sys/class/thermal/thermal_zone{i}/temp", int(c * 1000))


def ina3221(root: Path, address: str, rails: dict) -> None:
    """An INA3221 with hwmon files (JetPack 5/6): label -> (mV, mA) on inputs 1..3, and in7 (sum of shunts)."""
    hwmon = f"sys/bus/i2c/drivers/ina3221/{address}/hwmon/hwmon{len(list(root.glob('sys/bus/i2c/drivers/ina3221/*')))}"
    for n, (label, (mv, ma)) in enumerate(rails.items(), 1):
        write(root, f"{hwmon}/in{n}_label", label)
        write(root, f"{hwmon}/in{n}_input", mv)
        write(root, f"{hwmon}/curr{n}_input", ma)
    write(root, f"{hwmon}/in7_label", "sum of shunt voltages")
    write(root, f"{hwmon}/in7_input", 40)


def orin_nano_jp6(root: Path, bin_dir: Path) -> None:
    """A Jetson Orin Nano on JetPack 6: sysfs and nvpmodel, jetson_clocks (root), tegrastats."""
    write(root, "etc/nv_tegra_release", "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64")
    cpus(root, 6, governor="schedutil", khz=(729600, 1344000, 1190400))
    zones(root, {"cpu-thermal": 56.281, "gpu-thermal": 55.843, "cv0-thermal": None, "soc0-thermal": 54.093,
                 "tj-thermal": 56.281})
    for name, value in (("cur_freq", 306000000), ("min_freq", 306000000), ("max_freq", 918000000),
                        ("governor", "nvhost_podgov")):
        write(root, f"sys/class/devfreq/17000000.gpu/{name}", value)
    ina3221(root, "1-0040", {"VDD_IN": (5072, 992), "VDD_CPU_GPU_CV": (5072, 110), "VDD_SOC": (5072, 276)})
    printing(bin_dir, "nvpmodel", JP6_ORIN_NANO_NVPMODEL)
    printing(bin_dir, "jetson_clocks", JP6_ORIN_NANO_CLOCKS)
    streaming(bin_dir, "tegrastats", JP6_ORIN_NANO_TEGRASTATS)


def raspberry_pi4(root: Path, bin_dir: Path, throttled: str = "0x0") -> None:
    """A Raspberry Pi 4: cpufreq (ondemand), one thermal zone, and vcgencmd."""
    cpus(root, 4, governor="ondemand", khz=(600000, 1800000, 1800000))
    zones(root, {"cpu-thermal": 63.7})
    answers = {"get_throttled": f"throttled={throttled}", "measure_clock arm": PI4_CLOCK.strip(),
               "measure_temp": PI4_TEMP.strip()}
    for key, text in answers.items():
        write(bin_dir / "answers", f"vcgencmd-{key.replace(' ', '-')}", text)
    tool(bin_dir, "vcgencmd", f'cat "{bin_dir}/answers/vcgencmd-$(echo "$@" | tr " " -)"\n')


def path_with(bin_dir: Path) -> str:
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
