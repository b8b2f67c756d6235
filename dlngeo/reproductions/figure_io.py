"""The examples' figures: their shared command line, and small PNGs (matplotlib, Pillow palette).

Every example writes to ``./dlngeo-out/<example>/`` in the current directory
by default (``--out DIR`` elsewhere), never into the repository;
``--update-figures`` regenerates the committed ``examples/figures/`` (the
README's pictures) and is the only way to write there.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

__all__ = ["OUT_ROOT", "example_parser", "save_small_png"]

#: The folder (relative to the current directory) under which each example gets its own.
OUT_ROOT = Path("dlngeo-out")


def example_parser(doc: str, example: str | Path, quick: str) -> argparse.ArgumentParser:
    """The options every example takes; the example adds its own to the returned parser.

    ``args.out`` is ``./dlngeo-out/<example name>/`` unless ``--out DIR`` or
    ``--update-figures`` (the committed ``figures/`` folder beside the
    example) is given; the two exclude each other.

    Args:
        doc: The example's module docstring (its first line describes the command).
        example: The example's file (``__file__``).
        quick: Help text of ``--quick`` (what the smaller run changes).
    """
    example = Path(example)
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--out",
        type=Path,
        default=OUT_ROOT / example.stem,
        help=f"output folder (default: ./{OUT_ROOT / example.stem})",
    )
    where.add_argument(
        "--update-figures",
        dest="out",
        action="store_const",
        const=example.resolve().parent / "figures",
        help="write into the committed figures folder beside the example (the README's figures)",
    )
    return parser


def save_small_png(fig: Any, path: str | Path, dpi: int = 100, colors: int = 256) -> Path:
    """Save ``fig`` at ``dpi`` as a PNG with a ``colors``-colour palette (a few times smaller than RGBA for line plots).

    The folder is created if needed; the file is written whole
    (:func:`dlngeo.files.atomic_write`).
    """
    from PIL import Image

    from ..files import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    small = io.BytesIO()
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=colors).save(small, format="png", optimize=True)
    return atomic_write(path, small.getvalue())
