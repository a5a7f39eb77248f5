"""Provenance recorded with every benchmark run (``docs/protocols.md``, last section).

:func:`collect` returns a JSON-able dict: oddkit version and git commit, Python and
library versions, platform, CPU cores, GPU, start time, plus whatever the caller adds
(protocol, data folder, files with sizes and fingerprints, seeds, detectors).

It deliberately records **no personal information**: no host name, user name,
environment variables or home directory.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["collect", "git_commit", "library_versions", "file_entry"]

#: distribution names whose versions are recorded (the first installed name wins).
_LIBRARIES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "scipy": ("scipy",),
    "scikit-learn": ("scikit-learn",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss"),
    "pyod": ("pyod",),
    "torch": ("torch",),
}


def collect(**extra: Any) -> dict[str, Any]:
    """Provenance of this process, merged with ``extra`` (which wins on a clash)."""
    from .. import __version__

    info: dict[str, Any] = {
        "oddkit_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "cpu_cores": _cores(),
        "gpu": _gpu(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    info.update(extra)
    return info


def git_commit() -> str:
    """Commit of the oddkit checkout this package runs from, or ``"unknown"``.

    Only reported when the enclosing git work tree is oddkit's own (its
    ``pyproject.toml`` names the ``oddkit`` project), so an installed copy inside some
    other repository does not report that repository's commit. Read-only git calls.
    """
    here = Path(__file__).resolve().parent
    top = _git(here, "rev-parse", "--show-toplevel")
    if top is None or not _is_oddkit_tree(Path(top)):
        return "unknown"
    return _git(here, "rev-parse", "HEAD") or "unknown"


def library_versions() -> dict[str, str]:
    """Installed versions of the numerical libraries ("not installed" when absent)."""
    out = {}
    for label, dists in _LIBRARIES.items():
        out[label] = "not installed"
        for dist in dists:
            try:
                out[label] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def file_entry(path: str | os.PathLike[str], fingerprint: str | None = None) -> dict[str, Any]:
    """One entry of a provenance file list: name, size in bytes, data fingerprint."""
    p = Path(path)
    size = p.stat().st_size if p.is_file() else None
    return {"file": p.name, "bytes": size, "fingerprint": fingerprint}


# --------------------------------------------------------------------------- helpers
def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.strip()
    return text if done.returncode == 0 and text else None


def _is_oddkit_tree(top: Path) -> bool:
    pyproject = top / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return False
    return 'name = "oddkit"' in text


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _gpu() -> str:
    """A GPU in use by this process, else "none" (never imports torch itself)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:  # a broken CUDA setup must not break provenance
        return "none"
    return "none"
