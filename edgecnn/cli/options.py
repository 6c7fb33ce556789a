"""Options several verbs share: what a model from elsewhere needs said once (compile, quantize, export)."""

import click


def floats(ctx, param, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"'{value}': numbers separated by commas, e.g. 0.485,0.456,0.406") from None


def model_facts(command):
    """--input-shape, --layout, --mean, --std, --scale, --channel-order, --labels (edgecnn.data.image_model)."""
    options = [
        click.option("--input-shape", default=None, metavar="[NAME:]1x224x224x3",
                     help="fix the image input's dynamic dimensions (N for a dynamic batch)"),
        click.option("--layout", type=click.Choice(["NCHW", "NHWC"], case_sensitive=False), default=None,
                     help="the input's layout (default: guessed from the graph)"),
        click.option("--mean", callback=floats, default=None, help="per-channel mean after the scale, e.g. "
                     "0.485,0.456,0.406"),
        click.option("--std", callback=floats, default=None, help="per-channel std, e.g. 0.229,0.224,0.225"),
        click.option("--scale", default=None, help="pixel multiplier before mean/std (default 1/255; 1 for "
                     "mean/std in pixel units)"),
        click.option("--channel-order", type=click.Choice(["rgb", "bgr"]), default=None, help="default rgb"),
        click.option("--labels", default=None, metavar="FILE", help="class names: one a line, or a JSON/YAML list"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def given(options: dict) -> dict:
    """The model facts from a command's keyword arguments (None: not given)."""
    keys = ("input_shape", "layout", "mean", "std", "scale", "channel_order", "labels")
    return {k: options.pop(k) for k in keys if k in options}
