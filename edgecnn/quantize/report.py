"""What `edgecnn quantize` shows: a rich table (accuracy kept), the most sensitive layers, a bar plot."""

from pathlib import Path

from rich.table import Table

from edgecnn.backends import DEFAULT_QDQ_FORM
from edgecnn.quantize.sensitivity import worst


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}%"


def accuracy_table(rep: dict) -> Table:
    acc, cfg = rep["accuracy"], rep["config"]
    low = rep["precision"]
    how = "fp16" if low == "fp16" else \
        f"{rep['method']}, {cfg['algo']}, {'per-channel' if cfg['per_channel'] else 'per-tensor'} weights" + \
        (f", {cfg['form']} form" if cfg.get("form", DEFAULT_QDQ_FORM) != DEFAULT_QDQ_FORM else "")
    t = Table(title=f"quantization: {rep['model']} ({how}) on {acc['data']}")
    for col in ("model", "top-1", "drop (points)", "agreement with fp32"):
        t.add_column(col, justify="left" if col == "model" else "right")
    t.add_row("fp32", _pct(acc["fp32"]), "", "")
    if "ptq_int8" in acc:
        t.add_row("int8 PTQ", _pct(acc["ptq_int8"]), f"{acc['fp32'] - acc['ptq_int8']:.2f}",
                  _pct(acc.get("ptq_agreement")))
    label = {"qat": "int8 QAT", "ptq": "int8 PTQ", "fp16": "fp16"}[rep["method"]]
    drop = "-" if acc.get("drop") is None else f"{acc['drop']:.2f}"
    t.add_row(f"[bold]{label}[/]", f"[bold]{_pct(acc[low])}[/]", f"[bold]{drop}[/]", _pct(acc["agreement"]))
    fp32_layers = cfg.get("fp32_layers") or []
    if fp32_layers:
        t.caption = f"kept in fp32 ({len(fp32_layers)}): {', '.join(fp32_layers)}"
    return t


def algo_table(rep: dict) -> Table | None:
    """--algo auto: each calibrator's whole-model int8 accuracy on the held-out images, the kept one in bold."""
    choice = rep.get("algo_auto")
    if not choice:
        return None
    t = Table(title=f"--algo auto on {choice['data']} (fp32 {_pct(choice['fp32'])}, max drop {choice['max_drop']})")
    for col in ("calibration", "top-1", "drop (points)", "agreement with fp32"):
        t.add_column(col, justify="left" if col == "calibration" else "right")
    for r in choice["rows"]:
        cells = [r["algo"], _pct(r["top1"]), "-" if r["drop"] is None else f"{r['drop']:.2f}", _pct(r["agreement"])]
        if r["algo"] == choice["chosen"]:
            cells = [f"[bold]{c}[/]" for c in cells]
        t.add_row(*cells)
    t.caption = f"kept: {choice['chosen']}" + ("" if choice["within_budget"] else
                                                 f" (none within {choice['max_drop']} points: the most accurate)")
    return t


def sensitivity_table(rep: dict, n: int = 10) -> Table | None:
    sens = rep.get("sensitivity")
    if not sens:
        return None
    t = Table(title=f"most sensitive layers (each quantized alone, {sens['data']}, fp32 {sens['fp32_top1']:.2f}%)")
    for col in ("layer", "op", "top-1", "drop (points)", "flipped"):
        t.add_column(col, justify="left" if col in ("layer", "op") else "right")
    for r in worst(sens, n):
        t.add_row(r["layer"], r["op"], _pct(r["top1"]), f"{r['drop']:.2f}", _pct(r["flipped"]))
    return t


def plot_sensitivity(rep: dict, path: Path) -> None:
    """Horizontal bars in graph order: top-1 drop and flipped predictions per layer; fp32 layers in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rep["sensitivity"]["layers"]
    kept = set(rep["config"].get("fp32_layers") or [])
    names = [r["layer"] for r in rows]
    colors = ["0.6" if n in kept else "tab:red" for n in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, max(3.0, 0.22 * len(rows) + 1)), sharey=True)
    a.barh(names, [r["drop"] for r in rows], color=colors)
    a.set(xlabel="top-1 drop (points)", title="accuracy drop, layer quantized alone")
    b.barh(names, [r["flipped"] for r in rows], color=colors)
    b.set(xlabel="predictions flipped vs fp32 (%)", title="flipped predictions")
    for ax in (a, b):
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"int8 sensitivity: {rep['model']} ({rep['sensitivity']['data']}); grey = kept in fp32")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
