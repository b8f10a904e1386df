"""The index backends by name, and the one spec string that makes an index: ``faiss:IVF256,PQ16``, ``faiss:Flat``
(or ``faiss``), ``exact``, ``milvus:HNSW`` (or ``milvus``: FLAT).

:data:`INDEX_BACKENDS` (an :class:`asymret.core.registry.Registry`) names each backend's class by module, imported
on first use (``import asymret.index`` loads neither FAISS nor pymilvus); :func:`create_index` makes an empty index
from a spec, :func:`load_index` loads a saved one of any backend (its manifest names the backend).
"""
from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..core.manifest import read_manifest
from ..core.registry import Registry, check_kwargs
from ..core.space import Space
from .base import GalleryIndexBase

__all__ = ["Backend", "INDEX_BACKENDS", "IndexSpec", "create_index", "load_index", "parse_index_spec", "supported_options"]


@dataclass(frozen=True)
class Backend:
    """A backend: its class (``module``/``class_name``, imported when first needed), the constructor keyword the
    spec's parameter sets (``None``: the backend takes none) and its default, and the optional dependency group
    (``pip install -e '.[extra]'``) it needs, if any."""

    name: str
    module: str
    class_name: str
    parameter: str | None = None
    default: str | None = None
    extra: str | None = None
    upper_case: bool = False  # the parameter is a name in capitals (Milvus index types)

    def index_class(self) -> type[GalleryIndexBase]:
        try:
            module = importlib.import_module(self.module, __package__)
        except ImportError as error:
            raise self._missing_extra(error) from error
        return getattr(module, self.class_name)

    def _missing_extra(self, error: ImportError) -> ImportError:
        if self.extra is None:
            return error
        return ImportError(f"the {self.name} index backend needs the '{self.extra}' extra (pip install -e '.[{self.extra}]'): {error}")


INDEX_BACKENDS: Registry[Backend] = Registry("index backend")
INDEX_BACKENDS.register("faiss", Backend("faiss", ".faiss_index", "FaissGalleryIndex", parameter="factory", default="Flat"))
INDEX_BACKENDS.register("exact", Backend("exact", ".exact", "ExactIndex"))
INDEX_BACKENDS.register("milvus", Backend("milvus", ".milvus", "MilvusGalleryIndex", parameter="index_type", default="FLAT",
                                          extra="scale", upper_case=True))


@dataclass(frozen=True)
class IndexSpec:
    """A parsed spec string: the backend's registry name and its parameter (a FAISS factory string, a Milvus index
    type; ``None`` for the backend's default or a backend without one)."""

    backend: str
    parameter: str | None = None

    def __str__(self) -> str:
        return self.backend if self.parameter is None else f"{self.backend}:{self.parameter}"

    @property
    def entry(self) -> Backend:
        return INDEX_BACKENDS[self.backend]


def parse_index_spec(spec: str | IndexSpec) -> IndexSpec:
    """``"faiss:IVF256,PQ16"`` → ``IndexSpec("faiss", "IVF256,PQ16")``; the backend's default parameter filled in
    (``"faiss"`` → ``faiss:Flat``).  ValueError for an unknown backend (naming the known ones) or a parameter given
    to a backend that takes none."""
    if isinstance(spec, IndexSpec):
        return spec
    name, _, parameter = str(spec).strip().partition(":")
    backend = INDEX_BACKENDS.get_entry(name)
    parameter = parameter.strip()
    if backend.parameter is None:
        if parameter:
            raise ValueError(f"the {backend.name} index takes no parameter: give {backend.name!r}, not {str(spec)!r}")
        return IndexSpec(backend.name)
    parameter = parameter or backend.default
    return IndexSpec(backend.name, parameter.upper() if backend.upper_case else parameter)


def create_index(spec: str | IndexSpec, space: Space, **options: Any) -> GalleryIndexBase:
    """An empty index of ``spec`` in ``space``; ``options`` are the backend's own constructor arguments (e.g.
    ``exact_rerank=4`` for FAISS, ``uri=…``, ``collection=…`` for Milvus) — one it does not take is refused."""
    spec = parse_index_spec(spec)
    backend = spec.entry
    cls = backend.index_class()
    arguments = dict(options)
    if backend.parameter is not None:
        arguments[backend.parameter] = spec.parameter
    check_kwargs(cls, arguments, f"the {backend.name} index")
    try:
        return cls(space, **arguments)
    except ImportError as error:  # a client library imported when the index connects
        raise backend._missing_extra(error) from error


def supported_options(spec: str | IndexSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """Those of ``options`` the backend of ``spec`` takes (a command line offers every backend's options; each
    backend uses its own)."""
    cls = parse_index_spec(spec).entry.index_class()
    accepted = set(inspect.signature(cls.__init__).parameters)
    return {name: value for name, value in options.items() if name in accepted}


def load_index(directory: str | os.PathLike, expect_space: Space | None = None) -> GalleryIndexBase:
    """Load a saved gallery index of any backend (the manifest names it; one without a name is a FAISS index)."""
    backend = read_manifest(directory, kind=GalleryIndexBase.manifest_kind).get("backend", "faiss")
    if backend not in INDEX_BACKENDS:
        raise ValueError(f"{directory} holds a gallery index of unknown backend {backend!r}; known: {', '.join(INDEX_BACKENDS)}")
    return INDEX_BACKENDS[backend].index_class().load(directory, expect_space=expect_space)
