"""edgecnn run."""

import click


@click.command("run")
@click.argument("recipe_path", metavar="RECIPE")
@click.option("--target", "-t", default="host", show_default=True)
@click.option("--precision", default=None, help="fp32, fp16, int8 or a comma list (default: the target's "
              "precision, with int8 beside it where the target takes int8)")
@click.option("--out", default=None, help="RUN_DIR (default runs/<recipe name>)")
@click.option("--epochs", type=int, default=None, help="override schedule.epochs")
@click.option("--limit", type=int, default=None, help="first N images of each split (a quick trial)")
@click.option("--reuse", is_flag=True, help="keep RUN_DIR's trained model.pt instead of training again")
def run_cmd(recipe_path, *, target, precision, out, epochs, limit, reuse):
    """The whole pipeline for a RECIPE (a name from `edgecnn recipes`, or a YAML path): train, export, compile for
    TARGET, verify, bench, bundle; one summary."""
    from edgecnn import pipeline

    pipeline.run(recipe_path, target=target, precision=precision, out=out, epochs=epochs, limit=limit, reuse=reuse)
