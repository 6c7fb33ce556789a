"""The README blocks the benchmarks write: the text between a pair of HTML comment markers."""

from pathlib import Path

from edgecnn.core.fileio import atomic_file


def replace_block(readme: Path, markers: tuple[str, str], block: str) -> None:
    """Put `block` between the markers (written atomically); SystemExit when the README lacks them."""
    text = readme.read_text()
    start, end = (text.find(m) for m in markers)
    if start < 0 or end < start:
        raise SystemExit(f"{readme} lacks the markers {markers[0]} ... {markers[1]}")
    with atomic_file(readme) as tmp:
        tmp.write_text(text[:start + len(markers[0])] + "\n" + block + "\n" + text[end:])
