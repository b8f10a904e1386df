"""A re-ranking ready to serve: what ``asymret run --deploy`` writes when the configuration chosen on validation
re-ranks, and what ``asymret serve`` runs after the index's global search.

A folder (kind ``rerank-deployment``) holding:

- ``reranker/`` — the learned re-ranker (AMES, LOCORE) with its fusion; MaxSim needs no weights, its fusion is in
  the manifest;
- ``codec/`` — the database descriptors' codec;
- ``database.npz`` — the gallery's descriptors as stored (float16 or packed bits), their positions and validity,
  the ids and the global embeddings a list-wise re-ranker also reads (read with ``allow_pickle=False``);
- ``query-local/`` — the query model's local-descriptor layer exported to ONNX (the query side runs it beside the
  global model: the layers up to the descriptors' block only);
- ``manifest.json`` — the shortlist depth, the query side's budget, whether the query side is projected by the
  codec (symmetric and mapped modes) and the spaces every part must share.

The query side is built as the experiment built it (:meth:`~asymret.rerank.base.PairSide.from_local`), so a
served search re-ranks exactly as the experiment's row measured.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.manifest import read_manifest, write_manifest
from ..core.space import Embeddings, Space
from ..encoders.local import LocalSpec
from ..index.base import GalleryIndexBase
from .base import PairSide, Reranker, load_reranker
from .ames import MaxSimReranker
from .codec import DescriptorCodec
from .local import LocalDescriptors
from .search import RerankedIndex, Reranking

__all__ = ["RerankDeployable", "DeployedReranking", "write_rerank_deployment"]

DATABASE_FILE = "database.npz"


@dataclass
class RerankDeployable:
    """What a re-ranking row needs to be served: its re-ranker (fusion chosen), codec, the gallery's local
    descriptors (already mapped, in the mapped mode) and global embeddings, and the query side's settings."""

    reranker: Reranker
    codec: DescriptorCodec
    gallery_local: LocalDescriptors
    gallery_embeddings: Embeddings
    database_budget: int
    query_spec: LocalSpec
    query_budget: int
    project_queries: bool  # the query side projected by the codec (not in the unmapped asymmetric mode)
    shortlist: int


def write_rerank_deployment(deployable: RerankDeployable, query_encoder: Any, directory: str | os.PathLike,
                            verify_images: Sequence[np.ndarray] | None = None) -> Path:
    """``deployable`` written to ``directory`` (see the module's docstring); the query encoder's local layer is
    exported to ONNX (parity measured on ``verify_images``)."""
    from ..encoders.onnx import export_local_onnx

    directory = Path(directory)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    reranker = deployable.reranker
    if isinstance(reranker, MaxSimReranker):
        reranker_fields: dict[str, Any] = {"method": "maxsim", "fusion": reranker.fusion}
    else:
        reranker.save(directory / "reranker")
        reranker_fields = {"method": reranker.kind}
    deployable.codec.save(directory / "codec")
    local = deployable.gallery_local.align(deployable.gallery_embeddings.ids)
    database = PairSide.from_local(local, deployable.database_budget, codec=deployable.codec, embeddings=deployable.gallery_embeddings)
    encoded = deployable.codec.encode(local.take(deployable.database_budget))
    with open(directory / DATABASE_FILE, "wb") as handle:  # compact codes; the positions as the experiment read them
        np.savez(handle, codes=encoded.codes, xy=database.xy, valid=database.valid, ids=np.asarray(database.ids).astype(str),
                 embeddings=database.embeddings)
    export_local_onnx(query_encoder, deployable.query_spec, directory / "query-local", verify_images=verify_images)
    write_manifest(directory, "rerank-deployment", {
        "reranker": reranker_fields, "shortlist": deployable.shortlist, "query_budget": deployable.query_budget,
        "database_budget": deployable.database_budget, "project_queries": deployable.project_queries,
        "query_space": query_encoder.space().to_dict(), "database_space": database.space.to_dict(),
        "gallery_items": len(database.ids), "database_bytes_per_image": deployable.codec.bytes_per_image(deployable.database_budget),
    })
    return directory


class DeployedReranking:
    """A re-ranking folder loaded: ``local_rows(pixels)`` on the query side, ``over(index, queries, rows)`` the
    index searched ``shortlist`` deep and re-ranked."""

    def __init__(self, directory: str | os.PathLike, device: str = "auto") -> None:
        from ..encoders.onnx import OnnxLocalDescriptors

        directory = Path(directory)
        self.manifest = read_manifest(directory, kind="rerank-deployment")
        method = self.manifest["reranker"]["method"]
        if method == "maxsim":
            self.reranker: Reranker = MaxSimReranker(device=device)
            self.reranker.fusion = {k: float(v) for k, v in self.manifest["reranker"]["fusion"].items()}
        else:
            self.reranker = load_reranker(directory / "reranker", device=device)
        self.codec = DescriptorCodec.load(directory / "codec")
        self.query_local = OnnxLocalDescriptors(directory / "query-local", device)
        self.spec = LocalSpec(int(self.query_local.manifest["budget"]), self.query_local.manifest["layer"])
        self.query_space = Space.from_dict(self.manifest["query_space"])
        self.shortlist = int(self.manifest["shortlist"])
        with np.load(directory / DATABASE_FILE, allow_pickle=False) as data:  # arrays only: nothing executes
            codes, xy, valid, ids, embeddings = (data[key] for key in ("codes", "xy", "valid", "ids", "embeddings"))
        vectors = np.where(valid[..., None], self.codec.decode(codes), 0.0).astype(np.float32)
        self.database = PairSide(vectors, xy.astype(np.float32), valid.astype(bool), ids, Space.from_dict(self.manifest["database_space"]),
                                 None, np.ascontiguousarray(embeddings, dtype=np.float32))
        self._reranking = Reranking(self.reranker, self.database, self.database)  # the id → row table, built once

    @property
    def method(self) -> str:
        return str(self.manifest["reranker"]["method"])

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "shortlist": self.shortlist, "query_budget": int(self.manifest["query_budget"]),
                "database_budget": int(self.manifest["database_budget"]), "gallery_items": int(self.manifest["gallery_items"]),
                "database_bytes_per_image": int(self.manifest["database_bytes_per_image"])}

    def local_rows(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed (B, C, S, S) query pixels → their local-descriptor rows."""
        return self.query_local.rows(pixels)

    def queries(self, embeddings: Embeddings, rows: np.ndarray) -> PairSide:
        """The query side as the experiment built it: ``rows`` from :meth:`local_rows`, ``embeddings`` the same
        images' global embeddings."""
        self.query_space.check_compatible(embeddings.space, "queries")
        local = LocalDescriptors.from_embeddings(Embeddings(np.asarray(rows, np.float32), embeddings.ids, self.query_local.space()), self.spec)
        codec = self.codec if self.manifest["project_queries"] else None
        return PairSide.from_local(local, int(self.manifest["query_budget"]), codec=codec, stored=False, embeddings=embeddings)

    def over(self, index: GalleryIndexBase, embeddings: Embeddings, rows: np.ndarray) -> RerankedIndex:
        """``index`` searched ``shortlist`` deep with these queries and re-ranked (answers ``search`` as the index)."""
        return self._reranking.with_queries(self.queries(embeddings, rows)).over(index, self.shortlist)
