"""A gallery of shifts: one image under every shift (rows) at every severity (columns), as PNG.

``oddkit shifts gallery IMAGE --out gallery.png`` (or :func:`write_gallery`) shows what
each shift does and how its severity grows, the quickest check that a shift is what its
name says. The first column is the clean image.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import SEVERITIES, apply_shift, check_severity, get_shift, list_shifts

__all__ = ["gallery_png", "write_gallery"]


def gallery_png(
    image: np.ndarray,
    shifts: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    cell_inches: float = 1.1,
) -> bytes:
    """The gallery of ``image`` (uint8 ``(H, W, 3)``) as PNG bytes.

    ``shifts``: names (default: every registered shift, corruptions first); every name
    and severity is checked before any work. Each cell is
    ``apply_shift(image[None], name, severity, seed=seed)``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}."
        )
    names = _default_order() if shifts is None else [get_shift(n).name for n in shifts]
    if not names:
        raise InputError("no shifts to show.")
    levels = [check_severity(s) for s in severities]
    square = image.shape[0] == image.shape[1]
    names = [n for n in names if square or not get_shift(n).square_only]
    cells = [
        [apply_shift(image[None], n, s, seed=seed)[0] for s in levels] for n in names
    ]

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows, cols = len(names), len(levels) + 1
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * cell_inches, rows * cell_inches), squeeze=False
    )
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(image if c == 0 else cells[r][c - 1], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(
                    "clean" if c == 0 else f"severity {levels[c - 1]}", fontsize=8
                )
        axes[r][0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _default_order() -> list[str]:
    """Every registered shift: the 19 corruptions in protocol order, then the rest."""
    from . import CIFAR10_C

    registered = [s.name for s in list_shifts()]
    return [n for n in CIFAR10_C if n in registered] + [
        n for n in registered if n not in CIFAR10_C
    ]


def write_gallery(image: np.ndarray, path: str | Path, **kw: object) -> Path:
    """Write :func:`gallery_png` of ``image`` to ``path`` (parent folders created)."""
    path = Path(path)
    png = gallery_png(image, **kw)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path
