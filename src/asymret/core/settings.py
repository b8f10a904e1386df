"""Settings from plain data (parsed TOML/JSON): unknown keys are refused, naming the known ones."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

__all__ = ["strict_settings"]


def strict_settings(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``cls``; a key that is not one of its fields is an error
    (``unknown <what> setting(s) …; known: …``) rather than silently ignored."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return dict(data)
