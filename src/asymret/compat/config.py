"""The settings of a CMCE transformation ψ, in one dataclass shared by ``CMCETransform``, the CLI and experiments.

No torch here: the CLI reads the defaults when it starts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping

from ..core.settings import strict_settings

if TYPE_CHECKING:  # pragma: no cover
    from ..training import TrainConfig

__all__ = ["PsiConfig"]


@dataclass
class PsiConfig:
    """How a transformation ψ is built and fitted — the one place these defaults are written.

    ``losses`` maps the CMCE loss names (``similarity``, ``contrastive``, ``kl``, ``dual-ce``) to weights; ``None``
    means similarity 1 plus dual-ce 0.1 through the query model's head when one is given (similarity alone
    otherwise).  ``contrastive`` (InfoNCE against the batch's other images, ``contrastive_temperature``) asks for
    each image's own position where 1 − cos cannot: a target space concentrated in a narrow cone.
    """

    kind: str = "mlp"
    hidden_dim: int = 512
    num_layers: int = 2
    losses: dict[str, float] | None = None
    similarity: str = "cos"
    contrastive_temperature: float = 0.05
    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4

    def train_config(self, seed: int = 0) -> "TrainConfig":
        from ..training import TrainConfig  # torch: imported on use, so that reading a config stays cheap

        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay, seed=seed)

    def resolved_losses(self, has_head: bool) -> dict[str, float]:
        losses = self.losses if self.losses is not None else {"similarity": 1.0, "dual-ce": 0.1 if has_head else 0.0}
        return {name: float(weight) for name, weight in losses.items() if weight}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PsiConfig":
        return cls(**strict_settings(cls, data, "ψ"))
