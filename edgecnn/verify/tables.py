"""The parity table: one column per output, one row per metric."""

from rich.table import Table

from edgecnn.core.progress import fmt

ROWS = (("max abs error", "max_abs", 3), ("mean abs error", "mean_abs", 3), ("max rel error", "max_rel", 3),
        ("min cosine", "min_cosine", 6), ("top-1 agreement %", "top1_agreement", 2),
        ("decisive agreement %", "decisive_agreement", 2), ("decisive samples", "decisive_samples", 0),
        ("margin bound (2 x noise)", "margin_bound", 3),
        ("top-1 of build %", "top1_candidate", 2), ("top-1 of reference %", "top1_reference", 2),
        ("worst sample", "worst_sample", 0))


def parity_table(report: dict) -> Table:
    """One column per output, one row per metric (narrow enough for an 80-column log)."""
    board = f" on board {report['board']}" if report.get("board") else ""
    t = Table(title=f"parity: {report['backend']} ({report['target']}, {report['precision']}){board} vs "
                    f"{report['against']} on {report['data']}")
    t.add_column("metric")
    for name in report["outputs"]:
        t.add_column(name, justify="right")
    for label, key, digits in ROWS:
        if any(key in m for m in report["outputs"].values()):
            t.add_row(label, *(fmt(m.get(key), digits) for m in report["outputs"].values()))
    for side in ("candidate", "reference"):
        if any(f"nonfinite_{side}" in m for m in report["outputs"].values()):
            t.add_row(f"NaN/Inf in {side}", *(fmt((m.get(f"nonfinite_{side}") or {}).get("count", 0))
                                               for m in report["outputs"].values()))
    t.add_row("result", *("[red]FAIL[/]" if n in report["failures"] else "[green]pass[/]" for n in report["outputs"]))
    return t
