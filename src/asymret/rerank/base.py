"""What every re-ranker shares: one side's descriptors as the models take them, scoring a shortlist, fusing with the
global similarity, re-ranking a shortlist, the space checks, and saving / loading a learned model.

A re-ranker scores candidates of a global :class:`~.shortlist.Shortlist`; the fused score
s = λ·g + (1 − λ)·σ(γ·logit) reorders them.  A pair-wise re-ranker (MaxSim, AMES) scores every candidate on its
own; a list-wise one (LOCORE) scores a window of candidates together and overrides :meth:`Reranker.rerank`.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..core.device import resolve_device, resolve_precision
from ..core.manifest import SpaceMismatchError, atomic_torch_save, load_checkpoint, read_manifest, stable_hash, write_manifest
from ..core.progress import log
from ..core.space import Embeddings, Space, l2_normalize
from ..training import TrainHistory
from .local import LocalDescriptors
from .shortlist import Shortlist, fuse

__all__ = ["PairSide", "Reranker", "LearnedReranker", "RERANKERS", "load_reranker"]

#: the learned re-rankers by the ``method`` a saved one's manifest names; each subclass of :class:`LearnedReranker`
#: that sets its own ``kind`` enters itself (importing :mod:`asymret.rerank` imports them all)
RERANKERS: dict[str, type["LearnedReranker"]] = {}


@dataclass
class PairSide:
    """One side's descriptors as the models take them: ``vectors`` (N, k, c) float32, ``xy`` (N, k, 2), ``valid``
    (N, k) bool, the images' ids and the space the descriptors come from (plus the codec's, when stored compactly);
    ``embeddings`` (N, g): the images' global embeddings (what a list-wise re-ranker also reads), aligned."""

    vectors: np.ndarray
    xy: np.ndarray
    valid: np.ndarray
    ids: np.ndarray
    space: Space
    labels: np.ndarray | None = None
    embeddings: np.ndarray | None = None

    @classmethod
    def from_local(cls, local: LocalDescriptors, budget: int, codec=None, stored: bool = True,
                   embeddings: Embeddings | None = None) -> "PairSide":
        """The first ``budget`` descriptors (by detector weight): L2-normalised; with ``codec``, as the codec
        stores them (``stored``: float16 PCA or binarised — a database side) or only projected by it (a query side
        in the same projected space, kept in float as AMES keeps its query side).  ``embeddings``: the same
        images' global embeddings (their ids must match the descriptors')."""
        part = local.take(budget)
        if codec is None:
            vectors = l2_normalize(part.vectors, dtype=None)
            space = part.space
        else:
            if stored:
                vectors = codec.encode(part).decode()
            else:
                projected = codec.project(part)
                vectors = l2_normalize(projected, dtype=None)
            how = "stored" if stored else "projected"
            space = Space(stable_hash({"local": part.space.fingerprint, "codec": codec.fingerprint(), "as": how}), codec.dim,
                          normalized=True, name=f"{part.space.name}|codec {how}")
        global_vectors = None
        if embeddings is not None:
            if not np.array_equal(np.asarray(embeddings.ids).astype(str), np.asarray(part.ids).astype(str)):
                raise ValueError("the global embeddings and the local descriptors are not of the same images in the same order")
            global_vectors = np.ascontiguousarray(embeddings.vectors, dtype=np.float32)
        vectors = np.where(part.valid[..., None], vectors, 0.0).astype(np.float32)
        return cls(vectors, part.xy.astype(np.float32), part.valid.copy(), part.ids, space, part.labels, global_vectors)

    def take(self, rows: np.ndarray) -> "PairSide":
        """These images' rows only (e.g. one query of a batch)."""
        rows = np.asarray(rows)
        return PairSide(self.vectors[rows], self.xy[rows], self.valid[rows], self.ids[rows], self.space,
                        None if self.labels is None else self.labels[rows], None if self.embeddings is None else self.embeddings[rows])

    def rows(self, rows: np.ndarray, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """These rows' descriptors, (x, y) and validity as tensors (on ``device``, default the CPU)."""
        tensors = torch.from_numpy(self.vectors[rows]), torch.from_numpy(self.xy[rows]), torch.from_numpy(self.valid[rows])
        return tensors if device is None else tuple(t.to(device) for t in tensors)  # type: ignore[return-value]

    def global_rows(self, rows: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
        if self.embeddings is None:
            raise ValueError(f"{self.space.name}: this re-ranker also reads the global embeddings; build the side with embeddings=")
        tensor = torch.from_numpy(self.embeddings[rows])
        return tensor if device is None else tensor.to(device)


class Reranker:
    """Scores a shortlist's candidates (:meth:`score`), fuses them with the global scores (:meth:`fuse`) and
    reorders the shortlist (:meth:`rerank`).  Subclasses define ``kind`` and :meth:`score`."""

    kind: ClassVar[str] = ""

    def __init__(self, device: str = "auto", precision: str = "fp32") -> None:
        """``device`` (auto|cpu|cuda|cuda:N): where training and scoring compute; a learned model is kept on the CPU
        between calls (saved and loaded from there) and the scores come back as numpy float32.  ``precision``
        (fp32|bf16|fp16): the autocast of training and scoring — a runtime setting, not saved with the model."""
        self.fusion: dict[str, float] = {"lambda": 0.5, "gamma": 1.0}
        self.device = device
        self.precision = precision

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def compute(self) -> tuple[torch.device, str]:
        """(device, precision) resolved: one the machine lacks is refused in one line, before any work."""
        device = self.torch_device()
        return device, resolve_precision(self.precision, device)

    def score(self, queries: PairSide, database: PairSide, candidates: np.ndarray) -> np.ndarray:
        """Logits (Nq, S) of every query against its candidate database rows (positions into ``database``)."""
        raise NotImplementedError

    def fuse(self, global_scores: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """The fused scores with this re-ranker's (λ, γ) (chosen with :func:`~asymret.eval.rerank.choose_fusion`)."""
        return fuse(global_scores, logits, self.fusion["lambda"], self.fusion["gamma"])

    def fusion_logits(self, queries: PairSide, database: PairSide, shortlist: Shortlist) -> tuple[Shortlist, np.ndarray]:
        """The shortlist (or its head) and the logits the fusion is chosen on: every candidate, scored once."""
        return shortlist, self.score(queries, database, shortlist.candidates)

    def rerank(self, queries: PairSide, database: PairSide, shortlist: Shortlist) -> tuple[np.ndarray, np.ndarray]:
        """``(order, fused)``: the shortlist's columns (Nq, S) best first after re-ranking, and each column's fused
        score.  Pair-wise: every candidate scored on its own, sorted by the fused score."""
        fused = self.fuse(shortlist.scores, self.score(queries, database, shortlist.candidates))
        return shortlist.reordered(fused), fused


class LearnedReranker(Reranker):
    """A re-ranker with a trained torch model: the spaces it was trained on (checked on every call), the fusion it
    was given, and persistence as a state dict (``weights_only``: loading never runs code) plus a manifest."""

    config_class: ClassVar[type] = object

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):  # a class of its own method, not a variant inheriting one
            RERANKERS[cls.kind] = cls

    def __init__(self, config: Any = None, device: str = "auto", precision: str = "fp32") -> None:
        super().__init__(device, precision)
        self.config = config or self.config_class()
        self.model: nn.Module | None = None
        self.query_space: Space | None = None
        self.database_space: Space | None = None
        self.history: TrainHistory | None = None

    def _build_model(self, dims: dict[str, int]) -> nn.Module:
        raise NotImplementedError

    def _model_dims(self) -> dict[str, int]:
        raise NotImplementedError

    def _check(self, queries: PairSide, database: PairSide) -> None:
        if self.model is None:
            raise RuntimeError("the re-ranker is not trained: call fit() or load one")
        for side, expected, what in ((queries, self.query_space, "query"), (database, self.database_space, "database")):
            if side.space.fingerprint != expected.fingerprint:
                raise SpaceMismatchError(f"{what} descriptors from {side.space.name or side.space.fingerprint}, but the re-ranker was "
                                         f"trained on {expected.name or expected.fingerprint}")

    def save(self, directory: str | os.PathLike) -> Path:
        if self.model is None:
            raise RuntimeError("an untrained re-ranker cannot be saved")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(directory / "reranker.pt", self.model.state_dict())
        write_manifest(directory, "reranker", {
            "method": self.kind, "config": asdict(self.config), "fusion": self.fusion,
            "query_space": self.query_space.to_dict(), "database_space": self.database_space.to_dict(),
            "dims": self._model_dims(), "history": None if self.history is None else self.history.to_dict(),
        })
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str = "auto", precision: str = "fp32") -> "LearnedReranker":
        """A saved re-ranker (on the CPU; ``device`` / ``precision``: where and how it scores)."""
        directory = Path(directory)
        manifest = read_manifest(directory, kind="reranker")
        if manifest["method"] != cls.kind:
            raise ValueError(f"{directory} holds a {manifest['method']} re-ranker, not {cls.kind}")
        reranker = cls(cls.config_class.from_dict(manifest["config"]), device=device, precision=precision)
        # "dims" since the list-wise re-ranker; earlier AMES manifests name the two descriptor dims at the top level
        dims = manifest.get("dims") or {"query_dim": manifest["query_dim"], "database_dim": manifest["database_dim"]}
        reranker.model = reranker._build_model({k: int(v) for k, v in dims.items()})
        state = load_checkpoint(directory / "reranker.pt")  # never runs code
        reranker.model.load_state_dict(state)
        reranker.model.eval()
        reranker.fusion = {k: float(v) for k, v in manifest["fusion"].items()}
        reranker.query_space = Space.from_dict(manifest["query_space"])
        reranker.database_space = Space.from_dict(manifest["database_space"])
        log.info("loaded %s re-ranker from %s", cls.kind, directory)
        return reranker


def load_reranker(directory: str | os.PathLike, device: str = "auto", precision: str = "fp32") -> LearnedReranker:
    """Any saved re-ranker, by the method its manifest names (a class of :data:`RERANKERS`), scoring on ``device``
    in ``precision``."""
    method = read_manifest(directory, kind="reranker")["method"]
    if method not in RERANKERS:
        raise ValueError(f"{directory}: unknown re-ranker method {method!r}; known: {', '.join(RERANKERS)}")
    return RERANKERS[method].load(directory, device=device, precision=precision)
