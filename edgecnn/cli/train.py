"""edgecnn train / eval."""

import click

from edgecnn.core.progress import console

LAUNCH = ("nproc", "nnodes", "rdzv_endpoint", "rdzv_timeout")


def launch_options(f):
    """--nproc and the multi-node options, shared by train and quantize --method qat."""
    for option in reversed((
            click.option("--nproc", type=click.IntRange(1), default=None,
                         help="ranks on this machine: relaunch under torchrun (DistributedDataParallel)"),
            click.option("--nnodes", type=click.IntRange(1), default=1, show_default=True,
                         help="machines taking part (with --nproc; each runs the same command)"),
            click.option("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                         help="where the machines meet (torchrun's c10d rendezvous; with --nnodes)"),
            click.option("--rdzv-timeout", type=click.FloatRange(min=0, min_open=True), default=600.0,
                         show_default=True, help="seconds to wait for every machine"))):
        f = option(f)
    return f


def rank_argv(ctx: click.Context) -> list[str]:
    """The command line of this command without the launch options: what each rank runs."""
    argv = [ctx.command.name]
    for param in ctx.command.params:
        value = ctx.params[param.name]
        if param.name in LAUNCH or value is None or value == param.get_default(ctx) or value == ():
            continue
        if isinstance(param, click.Argument):
            argv.append(str(value))
        elif param.is_flag and param.secondary_opts:
            argv.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            argv.append(param.opts[0])
        else:
            for v in value if param.multiple else [value]:
                argv += [param.opts[0], str(v)]
    return argv


def relaunch(ctx: click.Context, nproc: int | None, after: str = "") -> bool:
    """Run this command on --nproc ranks under torchrun (True); False when it runs here, as one rank of many
    or alone."""
    from edgecnn.core.errors import EdgecnnError
    from edgecnn.train import launch

    p = ctx.params
    if nproc is None and p["nnodes"] == 1 and not p["rdzv_endpoint"]:
        return False
    if launch.under_torchrun():
        raise EdgecnnError("--nproc/--nnodes relaunch under torchrun, and this already runs under it: drop them")
    launch.launch(rank_argv(ctx), nproc=nproc or 1, nnodes=p["nnodes"], rdzv_endpoint=p["rdzv_endpoint"],
                  rdzv_timeout=p["rdzv_timeout"], after=after)
    return True


@click.command("train")
@click.argument("recipe_path", metavar="RECIPE", required=False)
@click.option("--out", "out", default=None, help="RUN_DIR (default runs/<recipe name>)")
@click.option("--epochs", type=int, default=None, help="override schedule.epochs")
@click.option("--limit", type=int, default=None, help="use only the first N images of each split")
@click.option("--device", default="auto", help="auto | cpu | cuda[:N] (under torchrun: cuda:LOCAL_RANK)")
@click.option("--resume", "resume_dir", default=None, metavar="RUN_DIR",
              help="continue an interrupted run from its last completed epoch (RUN_DIR.partial.pt)")
@launch_options
@click.pass_context
def train_cmd(ctx, recipe_path, *, out, epochs, limit, device, resume_dir, nproc, **_launch):
    """Train a model from a RECIPE (a name from `edgecnn recipes`, or a YAML path); writes model.pt, recipe.yaml,
    metrics.json, curves.png.

    On several ranks: --nproc N, or torchrun --nproc-per-node N -m edgecnn train RECIPE.yaml."""
    from edgecnn import train
    from edgecnn.core.errors import EdgecnnError
    from edgecnn.train import launch, recipe, resume

    if resume_dir:
        if recipe_path or epochs or limit:
            raise EdgecnnError("--resume RUN_DIR continues the run as it was started: give no RECIPE.yaml, "
                               "--epochs or --limit")
        out = resume_dir
        if nproc is None and not launch.under_torchrun():
            ranks = resume.load(out)["world_size"]  # resume on as many ranks as the run had
            nproc = ranks if ranks > 1 else None
    elif not recipe_path:
        raise EdgecnnError("train needs RECIPE, a name from `edgecnn recipes` or a YAML path (or --resume RUN_DIR)")
    else:
        rec = recipe.load(recipe_path)
        out = out or f"runs/{rec.name}"
    after = (f"{out} not written; if an epoch completed, continue with edgecnn train --resume {out}"
             + (f" --nproc {nproc}" if nproc else ""))
    if relaunch(ctx, nproc, after):
        return  # rank 0 printed the summary
    metrics = train.resume_run(out, device=device) if resume_dir else \
        train.train(rec, out, epochs=epochs, limit=limit, device=device)
    if metrics:  # rank 0
        ranks = metrics["world_size"]
        console.print(f"[bold green]{metrics['recipe']}[/]: test top-1 {metrics['test_top1']:.2f}% "
                      f"({metrics['train_seconds']:.0f} s training" + (f" on {ranks} ranks" if ranks > 1 else "")
                      + f") -> {out}")


@click.command("recipes")
def recipes_cmd():
    """List the training recipes known by name and the file each comes from."""
    from edgecnn.train import recipe

    from edgecnn.core import catalog

    console.print(recipe.table())
    for line in catalog.overrides("recipes"):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@click.command("eval")
@click.argument("run_dir", metavar="RUN_DIR")
@click.option("--limit", type=int, default=None, help="use only the first N test images")
def eval_cmd(run_dir, limit):
    """Re-measure test top-1 of a trained RUN_DIR."""
    from edgecnn import train

    result = train.eval_run(run_dir, limit)
    click.echo(f"test top-1 {result['top1']:.2f}%  loss {result['loss']:.4f}")
