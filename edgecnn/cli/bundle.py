"""edgecnn bundle."""

from pathlib import Path

import click

from edgecnn.core.progress import console


@click.command("bundle")
@click.argument("path", metavar="BUILD_DIR")
@click.option("-o", "--out", default=None, help="bundle file (default BUILD_DIR.edgecnn.tar.gz); with --unpack, "
              "the new folder")
@click.option("--unpack", is_flag=True, help="PATH is a bundle: check it (links, paths, sha256) and unpack it")
def bundle_cmd(path, out, unpack):
    """Pack a build into one deployable file: artifact, manifest (input spec, labels, accuracy, latency), README."""
    from edgecnn.deploy import bundle

    if unpack:
        dest = Path(out) if out else Path(path.removesuffix(bundle.SUFFIX).removesuffix(".tar.gz") + ".unpacked")
        man = bundle.unpack(path, dest)
        names = ["manifest.json", *man["files"]]
        console.print(f"unpacked {path} into {dest}: {len(names)} files ({', '.join(names)}), every sha256 checked")
        return
    written = bundle.pack(path, out)
    console.print(f"bundle {written} ({written.stat().st_size / 1e6:.2f} MB)")
