"""Time to make the 19 C10-R corruptions x 5 severities, oddkit against the imagecorruptions package.

oddkit: ``oddkit.shifts.apply_shift(images, name, severity)`` on all ``--n`` CIFAR-10 test
images at once (batched), single process. The target (issue 4): all 19 x 5 on the 10,000
CIFAR-10 test images in under 10 minutes on 2 cores.

Peer: ``imagecorruptions.corrupt(image, corruption_name, severity)`` (the maintained
package of the ImageNet-C corruptions; ImageNet-C parameters, so the images differ from
CIFAR-10-C's: a speed comparison of the same operations, not of identical outputs), one
image at a time as it is used, on the first ``--peer-n`` images of the same set. Where the
peer fails (some of its corruptions call APIs that numpy 2 / scikit-image 0.26 removed),
the row says so. The ratio compares seconds per image.

    python benchmarks/shift_generation.py                  # ~5-10 minutes on 2 cores
    python benchmarks/shift_generation.py --n 2000 --peer-n 100
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from oddkit.shifts import CIFAR10_C, apply_shift  # noqa: E402

CIFAR_TEST = ROOT.parent / "shared" / "data" / "cifar10" / "test"


def load_images(n: int) -> tuple[np.ndarray, str]:
    """``n`` CIFAR-10 test images (spread over the classes) or random ones without ../shared."""
    files = sorted(CIFAR_TEST.glob("*/*.jpg"))
    if len(files) >= n:
        from PIL import Image

        picked = [
            files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)
        ]
        return np.stack(
            [np.asarray(Image.open(f).convert("RGB")) for f in picked]
        ), "CIFAR-10 test JPEGs"
    rng = np.random.default_rng(0)
    return rng.integers(
        0, 256, size=(n, 32, 32, 3), dtype=np.uint8
    ), "random uint8 (../shared absent)"


def peer_corrupt():
    """imagecorruptions' ``corrupt`` (None when the package is not installed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from imagecorruptions import corrupt
    except Exception:  # not installed, or its pkg_resources import fails
        return None
    return corrupt


def time_peer(corrupt, images: np.ndarray, name: str) -> float | str:
    """Seconds per image over severities 1-5, or the peer's error."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for severity in range(1, 6):
                for image in images:
                    corrupt(image, corruption_name=name, severity=severity)
    except Exception as exc:
        return f"fails: {type(exc).__name__}"
    return (time.perf_counter() - start) / (5 * len(images))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--n", type=int, default=10_000, help="images for oddkit (default: all 10,000)"
    )
    ap.add_argument(
        "--peer-n", type=int, default=200, help="images for the peer, per severity"
    )
    args = ap.parse_args()
    images, what = load_images(args.n)
    corrupt = peer_corrupt()
    print(
        f"{len(images)} images ({what}); {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"peer: {'imagecorruptions on %d images per severity' % args.peer_n if corrupt else 'not installed'}\n"
    )
    print(f"{'corruption':<20}{'s1':>7}{'s2':>7}{'s3':>7}{'s4':>7}{'s5':>7}{'total s':>9}"
          f"{'ms/img':>8} {'peer ms/img':>17}{'ratio':>8}")  # fmt: skip
    total = 0.0
    ratios = []
    for name in CIFAR10_C:
        seconds = []
        for severity in range(1, 6):
            start = time.perf_counter()
            apply_shift(images, name, severity)
            seconds.append(time.perf_counter() - start)
        total += sum(seconds)
        ours = sum(seconds) / (5 * len(images))
        peer = time_peer(corrupt, images[: args.peer_n], name) if corrupt else "-"
        shown = f"{1e3 * peer:.3f}" if isinstance(peer, float) else peer
        ratio = f"{peer / ours:.1f}x" if isinstance(peer, float) else "-"
        if isinstance(peer, float):
            ratios.append(peer / ours)
        cells = "".join(f"{s:>7.2f}" for s in seconds)
        print(
            f"{name:<20}{cells}{sum(seconds):>9.1f}{1e3 * ours:>8.3f} {shown:>17}{ratio:>8}"
        )
    print(f"\noddkit total: {total:.1f} s for 19 x 5 x {len(images)} images "
          f"({total / 60:.1f} min; target < 10 min for 10,000 images)")  # fmt: skip
    if ratios:
        print(
            f"peer / oddkit seconds per image: median {np.median(ratios):.1f}x over {len(ratios)} corruptions"
        )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
