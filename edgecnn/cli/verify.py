"""edgecnn verify."""

import click

from edgecnn.core.progress import console


@click.command("verify")
@click.argument("build_dir", metavar="BUILD_DIR", required=False)
@click.option("--against", type=click.Choice(["torch", "onnxruntime", "fakequant"]), default=None,
              help="reference: torch (default), or fakequant (default for int8: the Q/DQ graph run op by op)")
@click.option("--data", default="test", show_default=True,
              help="test | val | DATASET:SPLIT | random | imagefolder:DIR | idx:DIR | npz:FILE")
@click.option("--limit", type=int, default=None, help="first N samples only")
@click.option("--report", default=None, help="JSON report path (default BUILD_DIR/verify.json)")
@click.option("--atol", type=float, default=None, help="max abs error allowed (default by precision)")
@click.option("--min-cosine", type=float, default=None)
@click.option("--min-agreement", type=float, default=None, help="top-1 agreement percent")
@click.option("--no-localize", is_flag=True, help="on failure, skip the layer-wise search")
@click.option("--ops", is_flag=True, help="print the operator coverage matrix of every available backend")
@click.option("--rpc", default=None, metavar="HOST:PORT", help="run the build on a board of this TVM RPC tracker "
              "(the reference runs here)")
@click.option("--key", default=None, help="the board's tracker key (default: the build's target name)")
@click.option("--rpc-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="seconds to wait for the tracker")
def verify_cmd(build_dir, *, against, data, limit, report, atol, min_cosine, min_agreement, no_localize, ops, rpc,
               key, rpc_timeout):
    """Check a build computes what the trained model computes (parity vs a reference)."""
    from edgecnn import verify
    from edgecnn.core.errors import EdgecnnError

    if ops:
        from edgecnn.verify import opcheck

        console.print(opcheck.matrix_table(opcheck.run_matrix()))
        return
    if not build_dir:
        raise EdgecnnError("verify needs BUILD_DIR (or --ops)")
    if key and not rpc:
        raise EdgecnnError("--key names a board of an RPC tracker: give the tracker too (--rpc HOST:PORT)")
    board = {"rpc": rpc, "key": key, "timeout": rpc_timeout} if rpc else None
    try:
        result = verify.verify(build_dir, against, data=data, limit=limit, report_path=report,
                               localize=not no_localize, board=board, max_abs=atol, min_cosine=min_cosine,
                               min_agreement=min_agreement)
    except verify.ParityError as e:
        print_report(e.report)
        raise
    print_report(result)


def print_report(report: dict) -> None:
    from edgecnn import verify
    from edgecnn.verify import tables

    console.print(tables.parity_table(report))
    recorded = report.get("recorded", "")
    for line in (verify.decisive_line(report), verify.fp32_line(report), *report.get("notes", []),
                 recorded if recorded.startswith("not") else None):
        if line:
            console.print(line, markup=False, highlight=False)
