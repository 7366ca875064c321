"""One YAML reader for every configuration file, so a broken file always fails the same clear way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_yaml(path: str | Path, what: str = "YAML file", mapping: bool = True) -> Any:
    """Parsed content of `path`; ValueError naming `what`, the file and the problem when it is missing,
    unreadable, not YAML, or (with `mapping`) not a mapping. An empty file is {} (or None)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {path}: not valid YAML: {exc}") from exc
    if mapping:
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ValueError(f"{what} {path}: expected a mapping, got {type(data).__name__}")
    return data
