"""What an experiment runs, as data: the model recipes (:class:`ModelSpec`), the :class:`ExperimentConfig` (typed,
loadable from a plain dict, unknown keys refused) and the named profiles of ``asymret demo``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from ..compat.config import PsiConfig
from ..core.registry import Registry
from ..core.settings import strict_settings

__all__ = ["ModelSpec", "ExperimentConfig", "PROFILES"]


@dataclass
class ModelSpec:
    """How to build and train one encoder of the experiment."""

    name: str
    arch: str
    epochs: int
    lr: float = 3e-3
    train_fraction: float = 1.0  # share of the training images this model sees (data diversity)
    freeze_backbone: bool = False
    tail_blocks: int = 0  # > 0: fine-tune only the backbone's last blocks on cached prefix activations
    cached_views: int = 2  # with tail_blocks: views per image whose prefix activations are cached
    pretrained: bool = False
    input_size: int | None = None
    neck: str = "linear"
    weight_decay: float = 1e-4
    batch_size: int = 128
    augment: str = "light"  # a preset of asymret.data.augment
    m_per_class: int = 0  # > 0: class-balanced batches
    warmup_epochs: float = 0.0
    center: bool = False  # centre the trained embedding on its mean training embedding (see Encoder)
    label_smoothing: float = 0.0  # smoothed normalised-softmax targets (few images per class)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        return cls(**strict_settings(cls, data, f"model {data.get('name', '?')!r}"))


@dataclass
class ExperimentConfig:
    """What the demo and the comparison run; ``PROFILES`` holds the named presets."""

    train_size: int | None = 10_000  # None: every training image
    test_size: int | None = 2_000  # None: every test image (the benchmarks' protocol)
    seeds: tuple[int, ...] = (0, 1, 2)
    embedding_dim: int = 64
    query: ModelSpec = field(default_factory=lambda: ModelSpec("query:convnet-xs", "convnet-xs", epochs=8))
    gallery: tuple[ModelSpec, ...] = ()
    kd_teacher: str = ""  # gallery model the KD baseline regresses ("" = the first)
    kd_epochs: int = 8
    psi: PsiConfig = field(default_factory=PsiConfig)
    reject_fraction: float = 0.1
    ks: tuple[int, ...] = (1, 2, 4, 8)
    instance_ks: tuple[int, ...] = (1, 10)
    # instance recall's queries: "" = the gallery image itself, embedded by the query side; an augmentation preset
    # (e.g. "strong", "glyph") = one new view of it (another photo, another print) that must find the original
    instance_view: str = ""
    # open-set data: this many training classes (a seeded choice) are held out of every model's training as the
    # validation split where choices are made — classes no model saw, like the test classes (0 = none)
    validation_classes: int = 0
    # also fit every ψ label-free (similarity loss alone) on the training images *plus the gallery being indexed*
    # (its images embedded by both sides — the server owns them), and report those rows beside the usual ones:
    # on open-set data a ψ fitted on training classes alone can memorise them
    transductive_psi: bool = False
    # the transductive protocol that never sees the queries: this share of each test class's images (seeded) are
    # the held-out queries; the rest is the gallery that is indexed and that the label-free ψ may see
    transductive_query_fraction: float = 0.5
    # also distil the KD student on the training images plus the indexed gallery (label-free: regression only) and
    # report it under the held-out protocol, beside the usual student under the same protocol
    transductive_kd: bool = False
    # the store's engine for every frozen forward pass: "onnx" = onnxruntime (embeddings equal torch's within 1e-5)
    runtime: str = "torch"
    # fixed banks of augmented views (asymret.data.augment.view_bank, view 0 = the image): ψ fitted on psi_views
    # views of each training image, the distilled students trained on kd_views (1 = the image alone)
    view_augment: str = "light"
    psi_views: int = 1
    kd_views: int = 1
    kd_method: str = "distill-cos"  # the KD row's compatibility method (distill-metric adds the student's own metric loss)
    # the KD student's start: "spec" = the query spec's initialisation (its pretrained weights, if any; partly
    # fine-tuned like it with tail_blocks), "query" = a copy of the trained query model, "teacher" = the teacher's
    # weights at the query's input size (its architecture must be the query's: RAML's student)
    kd_init: str = "spec"
    # also the robust ensemble: the subset of ψ's whose mean scores best on the validation classes
    robust_ensemble: bool = False
    # and a second robust ensemble whose candidate members include the query model itself (its own embeddings of
    # the gallery images: the gallery side can run the light model too), so the choice can fall back to it
    ensemble_query_member: bool = False
    # also compatible gallery models (BCT's direction: the heavy model made compatible with the light one): each
    # trained gallery model fine-tuned further *into the query model's space* by this compatibility method
    # (e.g. "bct", "distill-metric"; "" = none), searched singly and as a mean ensemble, no ψ
    gallery_compat: str = ""
    gallery_compat_epochs: int = 0  # 0 = each gallery spec's own epochs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExperimentConfig":
        """A config from plain data (a parsed TOML/JSON file); unknown keys are refused, naming the known ones."""
        values = strict_settings(cls, data, "experiment")
        if "query" in values:
            values["query"] = ModelSpec.from_dict(values["query"])
        if "gallery" in values:
            values["gallery"] = tuple(ModelSpec.from_dict(spec) for spec in values["gallery"])
        if "psi" in values:
            values["psi"] = PsiConfig.from_dict(values["psi"])
        for name in ("seeds", "ks", "instance_ks"):
            if name in values:
                values[name] = tuple(int(v) for v in values[name])
        return cls(**values)

    def model(self, name: str) -> ModelSpec:
        for spec in (self.query, *self.gallery):
            if spec.name == name:
                return spec
        raise KeyError(f"no model named {name!r} in this experiment")

    @property
    def kd_teacher_name(self) -> str:
        return self.kd_teacher or self.gallery[0].name


def _default_gallery() -> tuple[ModelSpec, ...]:
    return (
        ModelSpec("gallery:lite0", "efficientnet_lite0", epochs=12, lr=1e-3, freeze_backbone=True, pretrained=True,
                  input_size=64, neck="mlp", weight_decay=5e-2),
        ModelSpec("gallery:convnet-m", "convnet-m", epochs=10, train_fraction=0.8),
        ModelSpec("gallery:resnet-tiny", "resnet-tiny", epochs=8, train_fraction=0.6),
    )


#: named presets of the demo/comparison (``asymret demo --profile NAME``)
PROFILES: Registry[ExperimentConfig] = Registry("profile")
for _name, _config in {
    "default": ExperimentConfig(gallery=_default_gallery()),
    "full": ExperimentConfig(train_size=60_000, test_size=10_000, gallery=tuple(
        replace(spec, epochs=spec.epochs * 2) for spec in _default_gallery()),
        query=ModelSpec("query:convnet-xs", "convnet-xs", epochs=15), kd_epochs=15),
    # seconds-long: for tests and smoke runs
    "tiny": ExperimentConfig(
        train_size=600, test_size=300, seeds=(0, 1), embedding_dim=16,
        query=ModelSpec("query:convnet-xs", "convnet-xs", epochs=1),
        gallery=(ModelSpec("gallery:convnet-s", "convnet-s", epochs=1), ModelSpec("gallery:convnet-m", "convnet-m", epochs=1, train_fraction=0.7)),
        kd_epochs=10, psi=PsiConfig(epochs=3, hidden_dim=32),
    ),
}.items():
    PROFILES.register(_name, _config)
