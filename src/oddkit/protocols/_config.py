"""JSON configs of the folder-based protocols: reading and resolving relative paths."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError


def read_config(
    config: str | Path | Mapping[str, Any], kind: str, required: Sequence[str]
) -> tuple[dict[str, Any], Path | None]:
    """The config (a mapping or a JSON file) as a dict with every ``required`` key, and the
    folder its relative paths are resolved against (the file's folder; None for a mapping:
    the working directory). ``kind`` names the config in errors ("OOD", "shift")."""
    base = None
    if isinstance(config, Mapping):
        cfg = dict(config)
    else:
        try:
            cfg = json.loads(Path(config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(
                f"could not read the {kind} config {config}: {exc}"
            ) from exc
        base = Path(config).resolve().parent
    needs = ", ".join(f"'{k}'" for k in required)
    if not isinstance(cfg, dict):
        raise DataError(f"the {kind} config must be a JSON object with {needs}.")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise DataError(f"the {kind} config lacks {missing}; it needs {needs}.")
    return cfg, base


def resolve_path(value: Any, base: Path | None) -> Path:
    """``value`` as a path; a relative one is taken relative to ``base`` (when given)."""
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() or base is None else base / path
