"""edgecnn tune."""

import click

from edgecnn.core.progress import console


@click.command("tune")
@click.argument("onnx_path", metavar="MODEL.onnx")
@click.option("--target", "-t", required=True, help="a TVM target from `edgecnn targets` (host, rpi4, ...)")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="wall-clock budget of the search (with --trials, whichever ends first); the whole-model "
              "check after it takes a few builds more")
@click.option("--trials", type=click.IntRange(1), default=None, help="budget in candidate schedules measured")
@click.option("--db", default=None, metavar="DIR", help="tuning database (default beside the ONNX: tune-TARGET); "
              "one tuned for the same model, target and CPU is added to")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True, help="the batch to tune for")
@click.option("--rpc", default=None, metavar="HOST:PORT", help="measure on the boards of this TVM RPC tracker "
              "(every free board of the key at once)")
@click.option("--key", default=None, help="the board's tracker key (with --rpc)")
@click.option("--rpc-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="seconds to wait for the tracker")
def tune_cmd(onnx_path, target, *, minutes, trials, db, batch, rpc, key, rpc_timeout):
    """Tune a model's kernels within a budget: the schedule rules' parameters, searched where the time is;
    compile --tune-db DIR applies the result."""
    from edgecnn import backends
    from edgecnn.compiler import targets
    from edgecnn.core.errors import EdgecnnError

    tgt = targets.load(target)
    backend = backends.get(tgt.backend)
    if not isinstance(backend, backends.Tunable):
        tunable = [t.name for t in targets.all_targets() if isinstance(backends.get(t.backend), backends.Tunable)]
        raise EdgecnnError(f"target '{tgt.name}' uses {tgt.backend}, which has nothing to tune: edgecnn tune "
                           f"tunes {', '.join(tunable)}")
    path, record = backend.tune(onnx_path, tgt, minutes=minutes, trials=trials, db=db, rpc=rpc, key=key,
                                batch=batch, timeout=rpc_timeout)
    last = record["sessions"][-1]
    est = last["estimate_ms"]
    console.print(f"tuned {last['kernels']} kernels with {last['trials']} trials in {last['minutes']:.1f} min: kernel "
                  f"time estimate {est['start']:.3f} -> {est['end']:.3f} ms ({last['left']} candidates left); "
                  f"database {path} ({record['trials']} trials in all)")
    console.print(model_check_line(last.get("model_check", {})))
    if last.get("boards"):
        console.print(f"measured on {len(last['boards'])} '{key}' board(s): "
                      + ", ".join(f"{b} ({n} candidates)" for b, n in last["boards"].items()))
    console.print(f"apply it: edgecnn compile {onnx_path} --target {target} --tune-db {path}")


def model_check_line(check: dict) -> str:
    """What the whole-model check measured and kept, in one line."""
    if "skipped" in check or not check:
        return f"whole model not checked: {check.get('skipped', 'an older database')}"
    if not check["tuned"]:
        return "whole model: no kernel beat its default alone; the database holds the defaults"
    where = "" if check.get("measured_on", "local") == "local" else f", on board {check['measured_on']}"
    head = (f"whole model: tuned {check['tuned_ms']:.3f} ms vs defaults {check['default_ms']:.3f} ms "
            f"({check['tuned']} tuned kernels{where})")
    if not check["reverted"]:
        return f"{head}: all kept"
    if check["lost"]:
        return f"{head}: every tuned choice reverted, compile --tune-db builds the defaults"
    return (f"{head}: reverted {len(check['reverted'])} that lost in the model, kept {check['kept']}: "
            f"{check['final_ms']:.3f} vs {check['final_default_ms']:.3f} ms")
