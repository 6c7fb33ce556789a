"""How a bench report is shown: a rich table and a plot (latency distribution, latency vs batch)."""

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from edgecnn.bench import baselines
from edgecnn.device import conditions
from edgecnn.core.progress import fmt

COLUMNS = ("backend", "batch", "runs", "mean ms", "p50 ms", "p90 ms", "p99 ms", "min ms", "std ms", "img/s",
           "RSS MiB", "p99 / p50", "p50 / build", "p99 / build")


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def _memory(mem: dict) -> str:
    if mem.get("peak_rss_mib") is None:
        return "-"
    text = f"{mem['peak_rss_mib']:.0f}"
    if mem.get("runner_rss_mib") is not None:
        text += f" (+{mem['runner_rss_mib']:.0f})"
    if mem.get("gpu_mib") is not None:
        text += f", GPU {mem['gpu_mib']:.0f}"
    return text


def table(report: dict) -> Table:
    """One row per backend and batch size; the last column is the latency ratio to the build."""
    s = report["settings"]
    t = Table(title=f"bench: {report['model']} {report['backend']} ({report['target']}, {report['precision']}) "
                    f"on {report['system']['cpu']}, {_threads(s['threads'])}",
              caption="* the build. p99 / p50: the tail a real-time budget pays. p50 / build, p99 / build: a "
                      "backend's p50 (p99) over the build's (below 1: faster than the build). "
                      "RSS: the process's peak (+ what loading and running the model added)")
    energy = any(conditions.known(p) for r in report["results"].values()
                 for p in (r.get("device") or {}).get("power", {}).values())
    for col in COLUMNS + (("W", "mJ/img") if energy else ()):
        t.add_column(col, justify="left" if col == "backend" else "right", no_wrap=col in ("backend", "RSS MiB"))
    for name, r in report["results"].items():
        for b, st in r["batches"].items():
            ratio = report["ratios"].get(name, {}).get(b, {})
            own = name == report["backend"]
            p = (r.get("device") or {}).get("power", {}).get(b, {})
            t.add_row(name if name != report["backend"] else f"[bold]{name}[/]*", b, str(st["runs"]),
                      *(fmt(st[k]) for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "std_ms")),
                      f"{st['throughput_ips']:.1f}", _memory(r["memory"]), f"{st['p99_ms'] / st['p50_ms']:.2f}",
                      "1" if own else fmt(ratio.get("p50")), "1" if own else fmt(ratio.get("p99")),
                      *((fmt(p.get("mean_w"), 2), fmt(p.get("mj_per_image"))) if energy else ()))
    return t


def describe(device: dict) -> str:
    """One line of a subject's device state (conditions.brief): clocks, heat, power mode, power."""
    if "unavailable" in device:
        return f"state not read: {device['unavailable']}"
    parts = [f"on {device.get('host')}"]
    if device.get("cpu_governor"):
        mhz = device.get("cpu_mhz")
        parts.append(f"CPU governor {device['cpu_governor']}" + (f", {mhz[0]:.0f} -> {mhz[1]:.0f} MHz" if mhz else ""))
    else:
        parts.append("CPU clock not readable (no cpufreq)")
    hot = device.get("hottest_c")
    parts.append(f"hottest {device['hottest_sensor']} {hot[0]:.1f} -> {hot[1]:.1f} C" if hot
                 else "no temperature sensor")
    if "power_mode" in device:
        locked = {True: "clocks locked", False: "clocks not locked", None: "clocks: jetson_clocks --show needs root"}
        parts.append(f"Jetson {device['power_mode']}, {locked[device.get('clocks_locked')]}")
    if "throttled" in device:
        parts.append(f"vcgencmd throttled={device['throttled']}")
    watts = {b: p for b, p in device.get("power", {}).items() if conditions.known(p)}
    parts.append("; ".join(f"batch {b}: {p['mean_w']:.2f} W ({p['of']}), {p['mj_per_image']:.3g} mJ/image"
                           for b, p in watts.items()) if watts else "power: no sensor readable here")
    return "; ".join(parts)


def device_lines(report: dict) -> list[str]:
    """Rich-markup lines under the table: each subject's device state, then every warning."""
    lines = [f"[bold]device[/] ({escape(name)}): {escape(describe(conditions.brief(r['device'])))}"
             for name, r in report["results"].items() if r.get("device")]
    return lines + [f"[yellow]warning:[/] {escape(w)}" for w in report.get("warnings", [])]
def baseline_lines(report: dict) -> list[str]:
    """The build's p50 as a multiple of ONNX Runtime's on the same model, per batch size (the baseline a user
    would otherwise deploy), or how to get it; for an int8 build also of ONNX Runtime's int8 in its own form and
    of the fp32 build (bench.baselines)."""
    ort = report["ratios"].get("onnxruntime")
    if "boards" in report:
        return []
    same = "ONNX Runtime's on the same Q/DQ graph" if baselines.ORT_INT8 in report["ratios"] else "ONNX Runtime's"
    wanted = [] if report["backend"] == "onnxruntime" else [("onnxruntime", same)]
    if not ort and wanted:
        return ["no ONNX Runtime baseline in this run (--compare onnxruntime times it on the same model)"]
    wanted += [(baselines.ORT_INT8, "ONNX Runtime's int8 in its own Q/DQ form"), (baselines.FP32_BUILD, "the fp32 build's")]
    lines = []
    for name, what in wanted:
        for b, r in report["ratios"].get(name, {}).items():
            x = 1 / r["p50"]
            verdict = "[green]faster[/]" if x < 1 else "[yellow]slower[/]"
            tail = f"; its p99 is {1 / r['p99']:.2f}x {what} p99" if r.get("p99") else ""
            lines.append(f"batch {b}: the build's p50 is {x:.2f}x {what} ({verdict}){tail}")
    return lines


def round_lines(report: dict) -> list[str]:
    """With --rounds: each other subject's latency over the build's, per round (median and quartiles)."""
    rounds = report.get("rounds")
    if not rounds:
        return []
    return [f"[bold]rounds[/] {escape(name)} / {report['backend']} at batch {b}: {r['median']:.2f}x "
            f"(p25 {r['p25']:.2f}x, p75 {r['p75']:.2f}x) over {rounds['count']} interleaved rounds"
            for name, by_batch in rounds["ratios"].items() for b, r in by_batch.items()]


def boards_table(report: dict) -> Table:
    """bench --boards: one row per board and batch size; the last column is its p50 over the boards' median."""
    s = report["settings"]
    t = Table(title=f"bench: {report['model']} {report['backend']} ({report['target']}, {report['precision']}) "
                    f"on {report['system']['cpu']}, {_threads(s['threads'])}",
              caption="spread: (slowest - fastest p50) / median p50 of the boards, timed at the same time")
    for col in ("board", "batch", "runs", "mean ms", "p50 ms", "p90 ms", "p99 ms", "min ms", "std ms", "img/s",
                "p50 / median"):
        t.add_column(col, justify="left" if col == "board" else "right", no_wrap=col == "board")
    for r in report["boards"]:
        for b, st in r["batches"].items():
            t.add_row(r["board"], b, str(st["runs"]),
                      *(fmt(st[k]) for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "std_ms")),
                      f"{st['throughput_ips']:.1f}", fmt(st["p50_ms"] / report["spread"][b]["median_ms"]))
    for b, sp in report["spread"].items():
        t.add_row("[bold]spread[/]", b, "", "", f"{fmt(sp['min_ms'])}-{fmt(sp['max_ms'])}", "", "", "", "", "",
                  f"{sp['spread_pct']:.1f}%")
    return t


def plot(report: dict, path: str | Path) -> Path:
    """Latency distribution per backend and batch (violins); latency vs batch when several were run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = report["settings"]["batches"]
    fig, axes = plt.subplots(1, 2 if len(batches) > 1 else 1, figsize=(11 if len(batches) > 1 else 7, 4.5),
                             squeeze=False)
    _violins(axes[0][0], report)
    if len(batches) > 1:
        _versus_batch(axes[0][1], report)
    fig.suptitle(f"{report['model']} on {report['system']['cpu']} ({_threads(report['settings']['threads'])})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _violins(ax, report: dict) -> None:
    data, labels = [], []
    for name, r in report["results"].items():
        for b, st in r["batches"].items():
            data.append(st["times_ms"])
            labels.append(f"{name}\nbatch {b}")
    ax.violinplot(data, showmedians=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    lo, hi = min(min(d) for d in data), max(max(d) for d in data)
    if hi > 20 * lo:
        ax.set_yscale("log")
    ax.set_ylabel("latency per run (ms)")
    ax.set_title("latency distribution")


def _versus_batch(ax, report: dict) -> None:
    for name, r in report["results"].items():
        bs = [int(b) for b in r["batches"]]
        line, = ax.plot(bs, [s["p50_ms"] for s in r["batches"].values()], "o-", label=f"{name} p50")
        ax.plot(bs, [s["p99_ms"] for s in r["batches"].values()], "--", color=line.get_color(), label=f"{name} p99")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency per batch (ms)")
    ax.set_title("latency vs batch")
    ax.legend(fontsize=8)
