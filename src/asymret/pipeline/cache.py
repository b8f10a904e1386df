"""One cache for everything an experiment trains: artifacts keyed by the recipe that built them.

``cache.get_or_build(kind, name, recipe, build)`` returns the artifact saved under ``<root>/<kind>/<name>`` if it
was built from exactly ``recipe`` (same hash), else builds, saves and returns it.  The recipe file is written
after the artifact, so an interrupted build is rebuilt, never half-loaded.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..compat.transform import CMCETransform
from ..core.manifest import atomic_write_json, stable_hash
from ..encoders.encoder import load_encoder
from ..rerank import DescriptorCodec, load_reranker

__all__ = ["ArtifactCache", "ARTIFACT_KINDS", "recipe_of"]

T = TypeVar("T")
RECIPE_FILE = "recipe.json"

#: kind → (save(artifact, directory), load(directory))
ARTIFACT_KINDS: dict[str, tuple[Callable[[Any, Path], Any], Callable[[Path], Any]]] = {
    "encoder": (lambda encoder, directory: encoder.save(directory), load_encoder),
    "transformation": (lambda psi, directory: psi.save(directory), CMCETransform.load),
    "codec": (lambda codec, directory: codec.save(directory), DescriptorCodec.load),
    "reranker": (lambda reranker, directory: reranker.save(directory), load_reranker),
}


def recipe_of(settings: Any) -> dict[str, Any]:
    """A dataclass's fields as a recipe, leaving out those at their default value: a setting added to asymret later
    (with a default that keeps the old behaviour) then does not invalidate every cached model."""
    import dataclasses

    recipe = {}
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = dataclasses.MISSING
        if value != default:
            recipe[item.name] = recipe_of(value) if dataclasses.is_dataclass(value) else value
    return recipe


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@/" else "_" for c in name)


class ArtifactCache:
    """Trained artifacts under ``root``, reused when their recipe is unchanged."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def directory(self, kind: str, name: str) -> Path:
        return self.root / kind / _slug(name)

    def get_or_build(self, kind: str, name: str, recipe: dict[str, Any], build: Callable[[], T]) -> tuple[T, float]:
        """The artifact and the seconds its build took (the recorded ones when it comes from the cache).

        The first recipe built under ``name`` lives in ``<kind>/<name>``; another recipe under the same name (a
        study's variant) in ``<kind>/<name>~<recipe hash>`` beside it, so that variants never evict each other."""
        if kind not in ARTIFACT_KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}; known: {', '.join(ARTIFACT_KINDS)}")
        save, load = ARTIFACT_KINDS[kind]
        recipe_hash = stable_hash(recipe)
        primary = self.directory(kind, name)
        variant = primary.with_name(f"{primary.name}~{recipe_hash[:16]}")
        for directory in (primary, variant):
            marker = directory / RECIPE_FILE
            if marker.is_file():
                stored = json.loads(marker.read_text())
                if stored.get("hash") == recipe_hash:
                    return load(directory), float(stored.get("build_seconds", 0.0))
        directory = variant if (primary / RECIPE_FILE).is_file() else primary
        (directory / RECIPE_FILE).unlink(missing_ok=True)  # an interrupted build of this recipe: rebuild in place
        start = time.perf_counter()
        artifact = build()
        seconds = time.perf_counter() - start
        save(artifact, directory)
        atomic_write_json(directory / RECIPE_FILE, {"hash": recipe_hash, "recipe": recipe, "build_seconds": seconds})
        return artifact, seconds
