"""Rich tables for results people would rather see than read as JSON."""

from rich.markup import escape
from rich.table import Table


def fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


ROWS = (("max abs error", "max_abs", 3), ("mean abs error", "mean_abs", 3), ("max rel error", "max_rel", 3),
        ("min cosine", "min_cosine", 6), ("top-1 agreement %", "top1_agreement", 2),
        ("top-1 of build %", "top1_candidate", 2), ("top-1 of reference %", "top1_reference", 2),
        ("worst sample", "worst_sample", 0))


def parity_table(report: dict) -> Table:
    """One column per output, one row per metric (narrow enough for an 80-column log)."""
    t = Table(title=f"parity: {report['backend']} ({report['target']}, {report['precision']}) vs "
                    f"{report['against']} on {report['data']}")
    t.add_column("metric")
    for name in report["outputs"]:
        t.add_column(name, justify="right")
    for label, key, digits in ROWS:
        t.add_row(label, *(fmt(m.get(key), digits) for m in report["outputs"].values()))
    t.add_row("result", *("[red]FAIL[/]" if n in report["failures"] else "[green]pass[/]" for n in report["outputs"]))
    return t


def targets_table(targets, availability: dict) -> Table:
    t = Table(title="targets (targets/*.yaml)")
    for col in ("name", "backend", "device", "precisions", "description", "usable here"):
        t.add_column(col)
    for tg in targets:
        reason = availability.get(tg.backend)
        t.add_row(tg.name, tg.backend, tg.device, ", ".join(tg.precisions), tg.description,
                  "[green]yes[/]" if not reason else f"[yellow]no[/]: {escape(reason)}")
    return t
