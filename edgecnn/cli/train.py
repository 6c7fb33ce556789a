"""edgecnn train / eval."""

import click

from edgecnn.core.progress import console


@click.command("train")
@click.argument("recipe_path", metavar="RECIPE.yaml")
@click.option("--out", "out", default=None, help="RUN_DIR (default runs/<recipe name>)")
@click.option("--epochs", type=int, default=None, help="override schedule.epochs")
@click.option("--limit", type=int, default=None, help="use only the first N images of each split")
@click.option("--device", default="auto", help="auto | cpu | cuda[:N]")
def train_cmd(recipe_path, *, out, epochs, limit, device):
    """Train a model from a recipe; writes model.pt, recipe.yaml, metrics.json, curves.png."""
    from edgecnn.train import recipe
    from edgecnn import train

    rec = recipe.load(recipe_path)
    out = out or f"runs/{rec.name}"
    metrics = train.train(rec, out, epochs=epochs, limit=limit, device=device)
    console.print(f"[bold green]{rec.name}[/]: test top-1 {metrics['test_top1']:.2f}% "
                  f"({metrics['train_seconds']:.0f} s training) -> {out}")


@click.command("eval")
@click.argument("run_dir", metavar="RUN_DIR")
@click.option("--limit", type=int, default=None, help="use only the first N test images")
def eval_cmd(run_dir, limit):
    """Re-measure test top-1 of a trained RUN_DIR."""
    from edgecnn import train

    result = train.eval_run(run_dir, limit)
    click.echo(f"test top-1 {result['top1']:.2f}%  loss {result['loss']:.4f}")
