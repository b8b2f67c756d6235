"""The examples' figures: their shared command line, and small committed PNGs (matplotlib, Pillow palette)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

__all__ = ["example_parser", "save_small_png"]


def example_parser(doc: str, example: str | Path, quick: str) -> argparse.ArgumentParser:
    """The options every example takes; the example adds its own to the returned parser.

    Args:
        doc: The example's module docstring (its first line describes the command).
        example: The example's file (``__file__``): ``--out`` defaults to ``figures/`` beside it.
        quick: Help text of ``--quick`` (what the smaller run changes).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument(
        "--out", type=Path, default=Path(example).parent / "figures", help="figure folder"
    )
    return parser


def save_small_png(fig: Any, path: str | Path, dpi: int = 100, colors: int = 256) -> Path:
    """Save ``fig`` at ``dpi`` as a PNG with a ``colors``-colour palette (a few times smaller than RGBA for line plots)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=colors).save(path, optimize=True)
    return path
