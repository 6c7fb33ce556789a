"""Device state, power and clocks (edgecnn.device.state, power, clocks, conditions): this machine's real
sysfs, and Jetson / Raspberry Pi file trees and tools in their real formats (tests/device_trees.py)."""

import json
import threading
import time
from pathlib import Path

import pytest
from device_trees import (JP5_AGX_ORIN_CLOCKS, JP5_AGX_ORIN_TEGRASTATS, JP5_NVPMODEL, JP6_ORIN_NANO_TEGRASTATS,
                          LOCKED_NANO_CLOCKS, cpus, ina3221, orin_nano_jp6, path_with, printing, raspberry_pi4,
                          streaming, tool, write, zones)

from edgecnn.device import clocks, conditions, power
from edgecnn.device import state as device

FACTS = ("cpufreq", "thermal", "raspberry_pi", "jetson", "nvidia_smi")


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """A folder of stand-in vendor tools, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", path_with(bin_dir))
    return bin_dir


def test_this_machine(tmp_path):
    """The real sysfs and tools here: every fact is read, or says why not."""
    state = device.read()
    assert set(FACTS) <= set(state) and json.loads(json.dumps(state)) == state
    for fact in FACTS:
        value = state[fact]
        assert value and (not isinstance(value, dict) or "unavailable" not in value or len(value["unavailable"]) > 10)
    has_cpufreq = any(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))
    assert ("unavailable" not in state["cpufreq"]) == has_cpufreq
    if has_cpufreq:
        core = next(c for c in state["cpufreq"].values() if "governor" in c)
        assert core["governor"] and 0 < core["min_mhz"] <= core["max_mhz"]
    else:
        assert "no cpufreq" in state["cpufreq"]["unavailable"]
    has_zones = any(Path("/sys/class/thermal").glob("thermal_zone*"))
    assert ("unavailable" not in state["thermal"]) == has_zones
    meter = power.Meter()
    meter.start()
    time.sleep(0.2)
    reading = meter.stop()
    assert "mean_w" in reading or reading["unavailable"].startswith("no power sensor readable: ")


def test_jetson_orin_nano_jetpack6(tmp_path, fake_bin):
    root = tmp_path / "orin"
    orin_nano_jp6(root, fake_bin)
    state = device.read(root)
    cores = state["cpufreq"]
    assert list(cores) == [f"cpu{i}" for i in range(6)]
    assert cores["cpu0"] == {"governor": "schedutil", "cur_mhz": 1190.4, "min_mhz": 729.6, "max_mhz": 1344.0,
                             "online": True}
    assert state["thermal"]["tj-thermal"] == pytest.approx(56.281)
    assert "is a directory" in state["thermal"]["cv0-thermal"]["unavailable"]
    jet = state["jetson"]
    assert jet["power_mode"] == {"name": "25W", "id": 1}
    shown = jet["jetson_clocks"]
    assert shown["locked"] is False and len(shown["cpus"]) == 6
    assert shown["gpu"] == {"min_mhz": 306.0, "max_mhz": 918.0, "cur_mhz": 306.0}
    assert shown["emc"] == {"min_mhz": 204.0, "max_mhz": 3199.0, "cur_mhz": 2133.0}
    assert jet["gpu_devfreq"] == {"device": "17000000.gpu", "governor": "nvhost_podgov", "cur_mhz": 306.0,
                                  "min_mhz": 306.0, "max_mhz": 918.0}
    assert "needs root" in jet["emc_mhz"]["unavailable"]
    stats = jet["tegrastats"]
    assert stats["rails_mw"] == {"VDD_IN": 4428, "VDD_CPU_GPU_CV": 562, "VDD_SOC": 1400}
    assert stats["gpu"] == {"load_pct": 0, "mhz": 305} and stats["emc"] == {"load_pct": 0, "mhz": 2133}
    assert stats["temps_c"]["tj"] == pytest.approx(56.281) and len(stats["cpu"]) == 6
    assert "unavailable" in state["raspberry_pi"] and "unavailable" in state["nvidia_smi"]
    brief = conditions.brief({"before": state, "after": state, "warnings": [], "power": {}})
    assert brief["power_mode"] == "25W" and brief["clocks_locked"] is False and brief["cpu_governor"] == "schedutil"


def test_jetson_rails_from_hwmon(tmp_path, fake_bin):
    """INA3221 rails polled from hwmon: VDD_IN is the module's power; in7 (sum of shunts) is not a rail."""
    root = tmp_path / "orin"
    orin_nano_jp6(root, fake_bin)
    assert set(power.ina3221_rails(root)) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    meter = power.Meter(root)
    meter.start()
    time.sleep(0.35)
    reading = meter.stop()
    vdd_in = reading["sources"]["VDD_IN (INA3221)"]
    assert vdd_in["mean_w"] == pytest.approx(5072 * 992 / 1e6) and vdd_in["samples"] >= 3
    assert reading["mean_w"] == vdd_in["mean_w"] and reading["of"] == "module input VDD_IN (INA3221)"
    assert 0.3 < reading["window_s"] < 5 and "no nvidia-smi" in reading["not_read"]
    with_energy = conditions.energy(reading, {"mean_ms": 2.0, "batch": 4})
    assert with_energy["mj_per_run"] == pytest.approx(vdd_in["mean_w"] * 2.0)
    assert with_energy["mj_per_image"] == pytest.approx(with_energy["mj_per_run"] / 4)


def test_jetson_agx_orin_jetpack5(tmp_path, fake_bin):
    """Two INA3221 without a VDD_IN rail: the power is the sum of the connected rails (NC inputs skipped)."""
    root = tmp_path / "agx"
    write(root, "etc/nv_tegra_release", "# R35 (release), REVISION: 2.1")
    ina3221(root, "1-0040", {"VDD_GPU_SOC": (5000, 480), "VDD_CPU_CV": (5000, 80), "VIN_SYS_5V0": (5000, 806)})
    ina3221(root, "1-0041", {"NC": (0, 0), "VDDQ_VDD2_1V8AO": (5000, 60), "NC ": (0, 0)})
    printing(fake_bin, "nvpmodel", JP5_NVPMODEL)
    printing(fake_bin, "jetson_clocks", JP5_AGX_ORIN_CLOCKS)
    streaming(fake_bin, "tegrastats", JP5_AGX_ORIN_TEGRASTATS)
    jet = device.read(root)["jetson"]
    assert jet["power_mode"] == {"name": "MAXN", "id": 0}
    shown = jet["jetson_clocks"]
    assert len(shown["cpus"]) == 12 and shown["cpus"]["cpu10"]["cur_mhz"] == 1113.6 and shown["locked"] is False
    assert shown["gpu"]["max_mhz"] == 1300.5
    stats = jet["tegrastats"]
    assert stats["rails_mw"] == {"VDD_GPU_SOC": 2399, "VDD_CPU_CV": 400, "VIN_SYS_5V0": 4032, "VDDQ_VDD2_1V8AO": 301}
    assert stats["gpu"] == {"load_pct": 0, "mhz": 0} and stats["temps_c"]["CV0"] == -256.0
    assert "unavailable" in jet["gpu_devfreq"]
    meter = power.Meter(root)
    meter.start()
    reading = meter.stop()
    assert set(reading["sources"]) == {f"{r} (INA3221)" for r in ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0",
                                                                   "VDDQ_VDD2_1V8AO")}
    assert reading["mean_w"] == pytest.approx((480 + 80 + 806 + 60) * 5000 / 1e6)
    assert reading["of"].startswith("sum of the rails")


def test_rails_from_tegrastats_when_hwmon_has_none(tmp_path, fake_bin):
    root = tmp_path / "jp4"
    write(root, "etc/nv_tegra_release", "# R32 (release), REVISION: 7.1")
    streaming(fake_bin, "tegrastats", JP6_ORIN_NANO_TEGRASTATS)
    meter = power.Meter(root)
    meter.start()
    time.sleep(0.5)
    reading = meter.stop()
    assert reading["sources"]["VDD_IN (tegrastats)"]["mean_w"] == pytest.approx(4.428)
    assert reading["sources"]["VDD_IN (tegrastats)"]["samples"] >= 2 and reading["mean_w"] == pytest.approx(4.428)


def test_locked_jetson_clocks():
    assert device.parse_jetson_clocks(LOCKED_NANO_CLOCKS)["locked"] is True
    assert device.parse_nvpmodel("NVPM VERB: Current mode: NV Power Mode: MODE_15W_6CORE\n2\n") == {
        "name": "MODE_15W_6CORE", "id": 2}
    with pytest.raises(ValueError):
        device.parse_tegrastats("RAM 1/2MB")


def test_jetson_clocks_without_root(tmp_path, fake_bin):
    tool(fake_bin, "jetson_clocks",
         'echo "Error: Run this script(/usr/bin/jetson_clocks) as a root user" >&2; exit 1\n')
    printing(fake_bin, "nvpmodel", JP5_NVPMODEL)
    jet = device.read(tmp_path)["jetson"]
    why = jet["jetson_clocks"]["unavailable"]
    assert "as a root user" in why and "needs root" in why
    assert "tegrastats not found" in jet["tegrastats"]["unavailable"]


def test_raspberry_pi(tmp_path, fake_bin):
    root = tmp_path / "pi"
    raspberry_pi4(root, fake_bin, throttled="0x50005")
    state = device.read(root)
    pi = state["raspberry_pi"]
    assert pi["throttled"] == {"throttled": "0x50005", "now": ["under-voltage", "throttled"],
                               "since_boot": ["under-voltage", "throttled"]}
    assert pi["arm_mhz"] == 1800.5 and pi["temp_c"] == 63.7
    assert state["cpufreq"]["cpu3"]["governor"] == "ondemand" and state["thermal"] == {"cpu-thermal": 63.7}
    assert "not a Jetson" in state["jetson"]["unavailable"]
    assert device.parse_throttled("throttled=0x0") == {"throttled": "0x0", "now": [], "since_boot": []}
    assert device.parse_measure_clock("frequency(45)=600000000") == 600.0  # a Pi 3's firmware


def test_raspberry_pi_without_vchiq_access(tmp_path, fake_bin):
    tool(fake_bin, "vcgencmd", 'echo "VCHI initialization failed" >&2; exit 255\n')
    pi = device.read(tmp_path)["raspberry_pi"]
    assert "VCHI initialization failed" in pi["throttled"]["unavailable"]


def test_drift_warns_on_throttling_clock_and_heat(tmp_path, fake_bin):
    """Two real reads of the Pi, with the SoC throttled and hotter in between."""
    root = tmp_path / "pi"
    raspberry_pi4(root, fake_bin)
    before = device.read(root)
    write(fake_bin / "answers", "vcgencmd-get_throttled", "throttled=0x60006")
    write(fake_bin / "answers", "vcgencmd-measure_clock-arm", "frequency(48)=1200102000")
    write(fake_bin / "answers", "vcgencmd-measure_temp", "temp=81.2'C")
    write(root, "sys/class/thermal/thermal_zone0/temp", 81200)
    write(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", 1200000)
    warnings = conditions.drift(before, device.read(root))
    text = "\n".join(warnings)
    assert "Raspberry Pi arm clock moved 1800 -> 1200 MHz" in text
    assert "Raspberry Pi is arm frequency capped, throttled now (vcgencmd get_throttled 0x60006)" in text
    assert "arm frequency capped, throttled happened during the runs" in text
    assert "temperature of" in text and "63.7 -> 81.2 C" in text
    assert conditions.drift(before, before) == []


def test_nvidia_smi(tmp_path, fake_bin):
    tool(fake_bin, "nvidia-smi", 'case "$*" in *-lms*) while true; do echo "0, 74.81"; echo "1, [N/A]"; sleep 0.1; '
                                 'done;; *) echo "0, NVIDIA H200, P0, 74.81, 700.00, 1980, 3201, 32"; '
                                 'echo "1, NVIDIA H200, P8, [N/A], 700.00, 345, 3201, 27";; esac\n')
    gpus = device.read(tmp_path)["nvidia_smi"]
    assert gpus[0] == {"index": 0, "name": "NVIDIA H200", "pstate": "P0", "power_w": 74.81, "power_limit_w": 700.0,
                       "sm_mhz": 1980.0, "mem_mhz": 3201.0, "temp_c": 32.0}
    assert gpus[1]["power_w"] is None and gpus[1]["pstate"] == "P8"
    meter = power.Meter(tmp_path)
    meter.start()
    time.sleep(0.45)
    reading = meter.stop()
    assert set(reading["sources"]) == {"GPU 0 (nvidia-smi)"} and reading["mean_w"] == pytest.approx(74.81)


def test_rapl_energy_counter(tmp_path):
    root = tmp_path / "x86"
    write(root, "sys/class/powercap/intel-rapl:0/name", "package-0")
    write(root, "sys/class/powercap/intel-rapl:0/max_energy_range_uj", 262143328850)
    counter = write(root, "sys/class/powercap/intel-rapl:0/energy_uj", 262143000000)
    write(root, "sys/class/powercap/intel-rapl:0:0/name", "core")  # a sub-zone: inside package-0
    write(root, "sys/class/powercap/intel-rapl:0:0/energy_uj", 5)
    meter = power.Meter(root)
    meter.start()
    time.sleep(0.2)
    counter.write_text("1671150\n")  # 2 J later, past the counter's wrap
    reading = meter.stop()
    package = reading["sources"]["package-0 (RAPL)"]
    assert package["energy_j"] == pytest.approx(2.0) and set(reading["sources"]) == {"package-0 (RAPL)"}
    assert package["mean_w"] == pytest.approx(2.0 / reading["window_s"], rel=0.05)
    assert reading["of"] == "package-0 (RAPL)"


def test_no_power_sensor_says_why(tmp_path):
    meter = power.Meter(tmp_path)
    meter.start()
    reading = meter.stop()
    assert reading["unavailable"].startswith("no power sensor readable: no INA3221 rails")
    assert "no RAPL zones" in reading["unavailable"]


def fake_jetson_clocks(bin_dir: Path, log: Path) -> None:
    tool(bin_dir, "jetson_clocks", f'echo "$*" >> "{log}"\ncase "$1" in --store) echo stored > "$2";; esac\n')


def test_lock_and_restore_clocks(tmp_path, fake_bin):
    root = tmp_path / "board"
    cpus(root, 2, governor="schedutil", khz=(729600, 1344000, 729600))
    log = tmp_path / "jetson_clocks.log"
    fake_jetson_clocks(fake_bin, log)
    record = clocks.lock(root)
    governors = [root / f"sys/devices/system/cpu/cpufreq/policy{i}/scaling_governor" for i in range(2)]
    assert [g.read_text() for g in governors] == ["performance", "performance"]
    assert record["not_done"] == [] and record["done"][0].startswith("jetson_clocks: CPU, GPU and EMC")
    assert record["done"][1] == "CPU governor 'performance' on 2 of 2 policies (was schedutil)"
    store = record["restore"]["jetson_clocks"]
    assert Path(store).read_text().strip() == "stored"
    back = clocks.restore(record)
    assert [g.read_text() for g in governors] == ["schedutil", "schedutil"] and not back["failed"]
    assert log.read_text().splitlines() == [f"--store {store}", "", f"--restore {store}"]
    assert not Path(store).exists()


def test_lock_clocks_where_the_device_does_not_allow(tmp_path, fake_bin):
    tool(fake_bin, "jetson_clocks", 'echo "Error: Run this script as a root user" >&2; exit 1\n')
    root = tmp_path / "board"
    cpus(root, 1, governor="schedutil", khz=(1, 2, 1))
    write(root, "sys/devices/system/cpu/cpufreq/policy0/scaling_available_governors", "schedutil")
    record = clocks.lock(root)
    assert record["done"] == [] and len(record["not_done"]) == 2
    assert "as a root user" in record["not_done"][0] and "needs root" in record["not_done"][0]
    assert "no 'performance' governor" in record["not_done"][1]
    assert "no cpufreq policies" in clocks.lock(tmp_path / "empty")["not_done"][-1]


def test_wait_cool(tmp_path):
    root = tmp_path / "hot"
    zones(root, {"cpu-thermal": 70.0, "cv0-thermal": -256.0})
    probe = conditions.Probe(root)

    def cool_down():
        time.sleep(0.3)
        write(root, "sys/class/thermal/thermal_zone0/temp", 40000)

    threading.Thread(target=cool_down).start()
    cooled = conditions.wait_cool(probe, 45, poll=0.05)
    assert cooled["reached_c"] == 40.0 and cooled["start_c"] == 70.0 and cooled["sensor"] == "cpu-thermal"
    assert cooled["waited_s"] >= 0.2 and not cooled["timed_out"]
    write(root, "sys/class/thermal/thermal_zone0/temp", 70000)
    assert conditions.wait_cool(probe, 45, timeout=0.1, poll=0.05)["timed_out"]
    assert "cannot wait" in conditions.wait_cool(conditions.Probe(tmp_path / "none"), 45)["unavailable"]
