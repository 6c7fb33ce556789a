"""edgecnn tune."""

import click

from edgecnn.core.progress import console


@click.command("tune")
@click.argument("onnx_path", metavar="MODEL.onnx")
@click.option("--target", "-t", required=True, help="a TVM target from `edgecnn targets` (host, rpi4, ...)")
@click.option("--trials", type=click.IntRange(1), required=True, help="MetaSchedule trials in all")
@click.option("--db", default=None, metavar="DIR", help="tuning database (default beside the ONNX: tune-TARGET); "
              "one tuned for the same model, target and CPU is added to")
@click.option("--per-task", type=click.IntRange(1), default=None,
              help="most trials for one kernel (default twice the even share)")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True, help="the batch to tune for")
@click.option("--no-prepack", is_flag=True, help="keep the weights' layout (cpu_weight_prepack off)")
@click.option("--rpc", default=None, metavar="HOST:PORT", help="measure on the boards of this TVM RPC tracker "
              "(every free board of the key at once)")
@click.option("--key", default=None, help="the board's tracker key (with --rpc)")
@click.option("--rpc-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="seconds to wait for the tracker")
def tune_cmd(onnx_path, target, *, trials, db, per_task, batch, no_prepack, rpc, key, rpc_timeout):
    """Tune a model's kernels for a target with MetaSchedule; compile --tune-db DIR applies the result."""
    from edgecnn import backends
    from edgecnn.compiler import targets
    from edgecnn.core.errors import EdgecnnError

    tgt = targets.load(target)
    backend = backends.get(tgt.backend)
    if not backend.tunable:
        tunable = [t.name for t in targets.all_targets() if backends.get(t.backend).tunable]
        raise EdgecnnError(f"target '{tgt.name}' uses {tgt.backend}, which has nothing to tune: edgecnn tune "
                           f"tunes {', '.join(tunable)}")
    path, record = backend.tune(onnx_path, target, trials=trials, db=db, per_task=per_task, rpc=rpc, key=key,
                                batch=batch, prepack=not no_prepack, timeout=rpc_timeout)
    last = record["sessions"][-1]
    console.print(f"tuned {last['kernels']} kernels with {last['trials']} trials in {last['minutes']:.1f} min "
                  f"(kernel time estimate {last['estimate_ms']:.3f} ms); database {path} "
                  f"({record['trials']} trials in all)")
    if last.get("boards"):
        console.print(f"measured on {len(last['boards'])} '{key}' board(s): "
                      + ", ".join(f"{b} ({n} candidates)" for b, n in last["boards"].items()))
    console.print(f"apply it: edgecnn compile {onnx_path} --target {target} --tune-db {path}")
