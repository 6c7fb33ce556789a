"""edgecnn bench."""

import click

from edgecnn.core.progress import console


def int_list(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        items = [int(v) for v in value.split(",")]
    except ValueError:
        items = [0]
    if min(items) < 1:
        raise click.BadParameter(f"'{value}': positive integers separated by commas, e.g. 1,8,32")
    return items


@click.command("bench")
@click.argument("build_dir", metavar="BUILD_DIR")
@click.option("--batch", "batches", default=None, help="batch sizes, e.g. 1,8,32 (default: the build's batch; "
              "a fixed-batch build runs only its own)")
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True, help="untimed runs first")
@click.option("--runs", type=click.IntRange(1), default=None, help="timed runs per batch size")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="time per batch size instead of --runs (default 2, at least 10 runs)")
@click.option("--threads", type=click.IntRange(1), default=None, help="threads for every backend "
              "(default: the usable CPU cores)")
@click.option("--compare", default=None, help="also run these on the same model, side by side: onnxruntime,torch "
              "or none (default onnxruntime, the baseline a build should beat, where installed; none with --rpc)")
@click.option("--out", default=None, help="JSON report (default BUILD_DIR/bench.json; a .png plot beside it)")
@click.option("--rpc", default=None, metavar="HOST:PORT", help="run on a board of this TVM RPC tracker")
@click.option("--key", default=None, help="the board's tracker key (default: the build's target name)")
@click.option("--rpc-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="seconds to wait for the tracker")
@click.option("--lock-clocks", is_flag=True, help="pin the clocks while timing where the device allows it "
              "(CPU governor performance, jetson_clocks; needs root) and restore them after")
@click.option("--wait-cool", type=float, default=None, metavar="C",
              help="before each batch size, wait until the hottest sensor is at or below C degrees Celsius")
@click.option("--boards", type=click.IntRange(1), default=1, show_default=True,
              help="with --rpc: time the build on this many boards of the key at once; each board and the spread")
@click.option("--rounds", type=click.IntRange(1), default=None, metavar="N",
              help="time the build and its --compare baselines in one process, in N interleaved rounds (a new "
              "random order each, --seconds or --runs a subject a round): per-round ratios a busy machine "
              "hits alike")
def bench_cmd(build_dir, *, batches, warmup, runs, seconds, threads, compare, out, rpc, key, rpc_timeout,
              lock_clocks, wait_cool, boards, rounds):
    """Measure a build's latency per batch size (mean, p50/p90/p99, min, stddev, throughput, memory)."""
    from edgecnn import bench
    from edgecnn.bench import report as benchreport

    if compare is None:
        compare = "none" if rpc or key or not bench.installed("onnxruntime") else "onnxruntime"
    compare = [c.strip() for c in compare.split(",") if c.strip() and c.strip() != "none"]
    load = device = None
    if rpc or key:
        load, device = bench.remote_subject(build_dir, rpc, key, timeout=rpc_timeout, threads=threads, compare=compare,
                                            boards=boards)
    report = bench.bench(build_dir, batches=int_list(batches), warmup=warmup, runs=runs, seconds=seconds,
                         threads=threads, compare=compare, out=out, load=load, device=device,
                         lock_clocks=lock_clocks, wait_cool=wait_cool, boards=boards, rounds=rounds)
    console.print(benchreport.boards_table(report) if "boards" in report else benchreport.table(report))
    for line in benchreport.device_lines(report):
        console.print(line)
    for line in benchreport.baseline_lines(report) + benchreport.round_lines(report):
        console.print(line)
    console.print(f"report {out or build_dir.rstrip('/') + '/bench.json'}, plot {report['plot']}")
