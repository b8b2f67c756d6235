"""Small committed PNGs: render with matplotlib, store with a colour palette (Pillow)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

__all__ = ["save_small_png"]


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
