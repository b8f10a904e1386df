"""CMCE transformations ψ_i: gallery model i's space → the query model's space, scikit-learn style.

    psi = CMCETransform(losses={"similarity": 1.0, "dual-ce": 1.0}, head=query_encoder.classifier)
    psi.fit(gallery_train_emb, query_train_emb)          # Embeddings of the same training images (ids aligned)
    gallery_in_query_space = psi.transform(gallery_emb)   # Embeddings that live in the query space

The query model is never touched.  Losses (weights selectable): similarity (1 − cos or L2) between ψ(φ_i(x)) and
φ_q(x); KL between the class distributions a shared head gives both; dual classification (CE of both through the
shared head).  The shared head defaults to the query model's own normalised-softmax classifier, frozen.
"""
from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import autocast, on_device, resolve_device, resolve_precision
from ..encoders.heads import CosineClassifier
from ..core.manifest import SpaceMismatchError, atomic_torch_save, hash_arrays, load_checkpoint, read_manifest, stable_hash, write_manifest
from ..core.space import Embeddings, Space
from ..training import TrainConfig, TrainHistory, batch_indices, seeded, train
from .config import PsiConfig
from .losses.base import CompatLoss, ContrastiveMatchLoss, SharedHeadCELoss, SharedHeadKLLoss, SimilarityLoss, WeightedSum


class TransformationNet(nn.Module):
    """ψ: R^{d_in} → R^{d_out}, L2-normalised output.

    - ``linear``: one linear map;
    - ``mlp``: Linear → BN → ReLU → Linear (as apple/ml-fct's transformation);
    - ``residual``: a linear projection plus a residual bottleneck MLP (Wang et al. 2020's unified representation);
    - ``procrustes``: an orthogonal map (orthonormal rows or columns), fitted in closed form by
      :meth:`CMCETransform.fit` — the least-capacity ψ: it can rotate a space, not memorise classes.
    """

    def __init__(self, in_dim: int, out_dim: int, kind: str = "mlp", hidden_dim: int = 512, num_layers: int = 2) -> None:
        super().__init__()
        self.kind = kind
        if kind == "linear":
            self.body: nn.Module = nn.Linear(in_dim, out_dim)
        elif kind == "procrustes":
            self.body = nn.Linear(in_dim, out_dim, bias=False)
        elif kind in ("mlp", "residual"):
            layers: list[nn.Module] = []
            dim = in_dim
            for _ in range(max(1, num_layers - 1)):
                layers += [nn.Linear(dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
                dim = hidden_dim
            layers.append(nn.Linear(dim, out_dim))
            self.body = nn.Sequential(*layers)
            self.skip = nn.Linear(in_dim, out_dim, bias=False) if kind == "residual" else None
        else:
            raise ValueError(f"unknown transformation kind {kind!r} (linear, mlp, residual, procrustes)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if getattr(self, "skip", None) is not None:
            out = out + self.skip(x)
        # normalised in float32 (a no-op without autocast): a bf16/fp16 norm leaves vectors off unit length
        return F.normalize(out.float(), dim=1)


def build_cmce_loss(weights: Mapping[str, float], head: CosineClassifier | None, similarity: str = "cos",
                    kl_temperature: float = 1.0, train_head: bool = False, contrastive_temperature: float = 0.05) -> WeightedSum:
    """The weighted CMCE loss from ``{"similarity": w, "contrastive": w, "kl": w, "dual-ce": w}``; head-based
    terms need ``head``."""
    terms: dict[str, tuple[CompatLoss, float]] = {}
    for name, weight in weights.items():
        if name == "similarity":
            terms[name] = (SimilarityLoss(similarity), weight)
        elif name == "contrastive":
            terms[name] = (ContrastiveMatchLoss(contrastive_temperature), weight)
        elif name in ("kl", "dual-ce"):
            if head is None:
                raise ValueError(f"the {name!r} loss needs the shared head (the query model's classifier): pass head=")
            shared = head if train_head else copy.deepcopy(head).frozen()
            terms[name] = (SharedHeadKLLoss(shared, kl_temperature) if name == "kl" else SharedHeadCELoss(shared, train_head), weight)
        else:
            raise ValueError(f"unknown CMCE loss {name!r} (similarity, contrastive, kl, dual-ce)")
    return WeightedSum(terms)


class CMCETransform:
    """One learned ψ_i with ``fit`` / ``transform`` / ``save`` / ``load``.

    Settings come from a :class:`PsiConfig` (``config=``) and/or its fields as keywords (``kind="linear"``…);
    ``train=`` (a :class:`TrainConfig`) overrides the training fields and the seed.  ``device`` (default: the
    training config's, else ``auto``) and ``precision`` are where and how :meth:`fit` and :meth:`transform`
    compute; ψ is kept on the CPU between calls and the embeddings come back as numpy float32.
    """

    def __init__(
        self,
        config: PsiConfig | None = None,
        head: CosineClassifier | None = None,
        name: str = "",
        seed: int = 0,
        train: TrainConfig | None = None,
        device: str | None = None,
        precision: str | None = None,
        **settings: Any,
    ) -> None:
        config = replace(config or PsiConfig(), **settings) if settings else (config or PsiConfig())
        if train is not None:
            config = replace(config, epochs=train.epochs, batch_size=train.batch_size, lr=train.lr, weight_decay=train.weight_decay)
            seed = train.seed
        self.settings = config
        self.kind, self.hidden_dim, self.num_layers, self.similarity = config.kind, config.hidden_dim, config.num_layers, config.similarity
        self.loss_weights = config.resolved_losses(head is not None)
        self.head = head
        self.train_config = train or config.train_config(seed)
        self.train_config = replace(self.train_config, device=device or self.train_config.device,
                                    precision=precision or self.train_config.precision)
        self.device = self.train_config.device
        self.name = name
        self.net: TransformationNet | None = None
        self.source_space: Space | None = None
        self.target_space: Space | None = None
        self.history: TrainHistory | None = None

    # ------------------------------------------------------------------ scikit-learn-like API
    def fit(self, gallery: Embeddings, query: Embeddings, labels: np.ndarray | None = None) -> "CMCETransform":
        """Learn ψ from gallery-model and query-model embeddings of the same training images (matched by id)."""
        if not isinstance(gallery, Embeddings) or not isinstance(query, Embeddings):
            raise TypeError("fit expects Embeddings (vectors + ids + space) for both sides, so that rows and spaces can be checked")
        common = np.intersect1d(gallery.ids, query.ids)
        if len(common) < len(gallery.ids) * 0.5:
            raise ValueError(f"only {len(common)} of {len(gallery)} gallery training images have query embeddings: are they of the same images?")
        if labels is not None:  # given in the gallery's row order: attach them so that they follow the alignment
            gallery = Embeddings(gallery.vectors, gallery.ids, gallery.space, labels)
        gallery, query = gallery.align(common), query.align(common)
        labels = gallery.labels if gallery.labels is not None else query.labels
        if self.head is not None and query.space.dim != self.head.weight.shape[1]:
            raise SpaceMismatchError("the shared head's dimension differs from the query space's")
        self.source_space, self.target_space = gallery.space, query.space
        with seeded(self.train_config.seed):  # ψ's initialisation; the caller's random streams are left alone
            self.net = TransformationNet(gallery.space.dim, query.space.dim, self.kind, self.hidden_dim, self.num_layers)
        if self.kind == "procrustes":
            self.history = _fit_procrustes(self.net, gallery.vectors, query.vectors)
            return self
        loss = build_cmce_loss(self.loss_weights, self.head, self.similarity,
                               contrastive_temperature=self.settings.contrastive_temperature)
        if loss.uses_labels and labels is None:
            raise ValueError("the dual-ce loss needs labels (none given and none attached to the embeddings)")
        device = resolve_device(self.device)
        resolve_precision(self.train_config.precision, device)  # a precision the device lacks: refused before any work
        net = self.net
        with on_device(net, loss, device=device):
            source = torch.from_numpy(gallery.vectors).to(device)
            target = torch.from_numpy(query.vectors).to(device)
            y = None if labels is None else torch.as_tensor(labels, dtype=torch.long, device=device)

            def compute_loss(rows: torch.Tensor) -> torch.Tensor:
                rows = rows.to(device)
                return loss(net(source[rows]), target[rows], None if y is None else y[rows])

            params = list(net.parameters()) + [p for p in loss.parameters() if p.requires_grad]
            batch_size = min(self.train_config.batch_size, len(source))
            self.history = train(params, compute_loss, lambda epoch, gen: batch_indices(len(source), batch_size, gen),
                                 self.train_config, modules=[net], description=f"fit ψ {self.name or gallery.space.name}")
        return self

    @torch.no_grad()
    def transform(self, gallery: Embeddings) -> Embeddings:
        """Map gallery-model embeddings into the query space (refuses embeddings of another gallery model)."""
        self._check_fitted()
        self.source_space.check_compatible(gallery.space, what=f"embeddings given to ψ {self.name!r}")
        self.net.eval()
        device = resolve_device(self.device)
        precision = resolve_precision(self.train_config.precision, device)
        with on_device(self.net, device=device), autocast(device, precision):
            # float32 out under any precision: stored embeddings stay float32
            out = [self.net(torch.from_numpy(gallery.vectors[i : i + 8192]).to(device)).float().cpu().numpy()
                   for i in range(0, len(gallery), 8192)]
        vectors = np.concatenate(out) if out else np.zeros((0, self.target_space.dim), np.float32)
        return Embeddings(vectors, gallery.ids, self.output_space(), gallery.labels)

    def fit_transform(self, gallery: Embeddings, query: Embeddings, labels: np.ndarray | None = None) -> Embeddings:
        return self.fit(gallery, query, labels).transform(gallery)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        self._check_fitted()
        return stable_hash({"config": self.config(), "weights": hash_arrays(self.net.state_dict().values()),
                            "source": self.source_space.fingerprint, "target": self.target_space.fingerprint})

    def output_space(self) -> Space:
        """The query space, with this ψ named in the provenance."""
        self._check_fitted()
        return Space(self.target_space.fingerprint, self.target_space.dim, True, self.target_space.name,
                     provenance=((self.name or self.source_space.name, self.fingerprint()),))

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "hidden_dim": self.hidden_dim, "num_layers": self.num_layers, "losses": self.loss_weights,
                "similarity": self.similarity, "train": self.train_config.to_dict(), "name": self.name}

    def _check_fitted(self) -> None:
        if self.net is None:
            raise RuntimeError("this CMCETransform is not fitted: call fit() or load()")

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        self._check_fitted()
        directory = Path(directory)
        head = None if self.head is None else {"config": self.head.config(), "state_dict": self.head.state_dict()}
        atomic_torch_save(directory / "transform.pt", {"config": self.config(), "state_dict": self.net.state_dict(),
                                                       "in_dim": self.source_space.dim, "out_dim": self.target_space.dim,
                                                       "head": head})
        write_manifest(directory, "transformation", {
            "fingerprint": self.fingerprint(), "source_space": self.source_space.to_dict(),
            "target_space": self.target_space.to_dict(), "config": self.config(),
            "history": None if self.history is None else self.history.to_dict(),
        })
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | None = None, precision: str | None = None) -> "CMCETransform":
        """A saved ψ (on the CPU; ``device`` / ``precision``: where and how its :meth:`transform` and a refit compute,
        default auto / fp32)."""
        directory = Path(directory)
        manifest = read_manifest(directory, kind="transformation")
        payload = load_checkpoint(directory / "transform.pt")  # never runs code
        config = payload["config"]
        head = None
        if payload.get("head"):  # the shared head travels with ψ, so a loaded ψ can be refitted with dual-ce/kl
            head = CosineClassifier(**payload["head"]["config"])
            head.load_state_dict(payload["head"]["state_dict"])
            head.frozen()
        settings = PsiConfig(kind=config["kind"], hidden_dim=config["hidden_dim"], num_layers=config["num_layers"],
                             losses=config["losses"], similarity=config["similarity"])
        psi = cls(settings, head=head, name=config["name"], train=TrainConfig(**config["train"]), device=device,
                  precision=precision)
        psi.net = TransformationNet(payload["in_dim"], payload["out_dim"], config["kind"], config["hidden_dim"], config["num_layers"])
        psi.net.load_state_dict(payload["state_dict"])
        psi.net.eval()
        if manifest.get("history"):
            psi.history = TrainHistory(list(manifest["history"]["epoch_losses"]), float(manifest["history"]["seconds"]))
        psi.source_space = Space.from_dict(manifest["source_space"])
        psi.target_space = Space.from_dict(manifest["target_space"])
        if psi.fingerprint() != manifest["fingerprint"]:
            raise ValueError(f"{directory}: weights do not match the manifest's fingerprint")
        return psi


def _fit_procrustes(net: TransformationNet, source: np.ndarray, target: np.ndarray) -> TrainHistory:
    """W = argmin ‖X Wᵀ − Y‖ over matrices with orthonormal rows/columns: U Vᵀ from the SVD of Yᵀ X (orthogonal
    Procrustes; the similarity loss's closed form for a rotation).  No labels, no training loop."""
    import time

    start = time.perf_counter()
    u, _, vt = np.linalg.svd(target.astype(np.float64).T @ source.astype(np.float64), full_matrices=False)
    with torch.no_grad():
        net.body.weight.copy_(torch.from_numpy((u @ vt).astype(np.float32)))
    net.eval()
    mapped = source @ (u @ vt).T
    mapped /= np.linalg.norm(mapped, axis=1, keepdims=True) + 1e-12
    residual = float(1.0 - np.mean(np.sum(mapped * target, axis=1)))
    return TrainHistory([residual], time.perf_counter() - start)


class QuerySelf:
    """The query model itself as an ensemble member: its own embeddings of the gallery images, unchanged.

    The gallery side can always afford the light model too; with it as one member of the ensemble, the gallery is
    the query model's own gallery pulled towards the heavy models' mapped embeddings, and a member selection made
    on validation classes can fall back to it exactly (the symmetric search) when no ψ carries over.  It quacks
    like a fitted :class:`CMCETransform` (``source_space`` = ``target_space`` = the query space, ``transform``,
    ``fingerprint``), so :class:`~asymret.gallery.ensemble.CMCEEnsemble` takes it as any member.
    """

    history: TrainHistory | None = None

    def __init__(self, query_space: Space, name: str = "query model itself") -> None:
        self.source_space = self.target_space = query_space
        self.name = name

    def transform(self, gallery: Embeddings) -> Embeddings:
        """The query model's gallery embeddings, checked to be in the query space, named in the provenance."""
        self.source_space.check_compatible(gallery.space, what=f"embeddings given to {self.name!r}")
        return Embeddings(gallery.vectors, gallery.ids, self.output_space(), gallery.labels)

    def fingerprint(self) -> str:
        return stable_hash({"identity": self.target_space.fingerprint})

    def output_space(self) -> Space:
        space = self.target_space
        return Space(space.fingerprint, space.dim, True, space.name, provenance=((self.name, self.fingerprint()),))

