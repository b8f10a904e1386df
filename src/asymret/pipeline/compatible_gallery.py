"""Compatible gallery models: the heavy gallery models trained *into the light query model's space*.

CMCE keeps every gallery model frozen and learns a small ψ from its space into the query's; on classes unseen in
training a ψ fitted on the training classes memorises them (RESULTS §4).  BCT's direction (Shen et al. 2020: a
new model trained with the old model's classifier is compatible with it, and the new-to-old search beats the
old model's own) does it with the whole gallery network instead: each trained gallery model is fine-tuned further
(its tail blocks, as it was trained) under a compatibility loss whose target is the query model — the query
model's frozen classifier (``bct``) or its embeddings plus the gallery model's own metric loss
(``distill-metric``).  The query model is untouched: it searches the compatible gallery as it is, so a deployed
query model never changes.  The compatible models are searched singly and as a mean ensemble (their
disagreement is the uncertainty), like the ψ's.
"""
from __future__ import annotations

from typing import Any

from ..encoders.encoder import Encoder
from ..eval.report import RowRecorder
from ..gallery.ensemble import mean_of_compatible
from ..index import GalleryIndex

# ``experiment`` below is a pipeline.experiment.Experiment and ``models`` its SeedModels: not imported, because
# the experiment imports this module (no circle, not even for types)

__all__ = ["compatible_gallery_models", "record_compatible_gallery"]


def compatible_gallery_models(experiment: Any, models: Any, query: Encoder, seed: int
                              ) -> list[tuple[Encoder, float]]:
    """Each trained gallery model fine-tuned into ``query``'s space by the config's ``gallery_compat`` method
    (cached by recipe, like every model of the experiment)."""
    cfg = experiment.config
    out = []
    for spec, model in zip(cfg.gallery, models.gallery_models):
        out.append(experiment.train_compatible(cfg.gallery_compat, query, seed, epochs=cfg.gallery_compat_epochs or spec.epochs,
                                               init=model, student_spec=spec))
    return out


def record_compatible_gallery(experiment: Any, record: RowRecorder, models: Any, query: Encoder,
                              seed: int) -> None:
    """The rows: the query model against each compatible gallery model, and against their mean (with rejection of
    the most uncertain gallery items when there are ≥ 2)."""
    store, cfg = experiment.store, experiment.config
    compatible = compatible_gallery_models(experiment, models, query, seed)
    method = cfg.gallery_compat
    for model, seconds in compatible:
        experiment.record_asymmetric(record, seed, f"compatible gallery ({method}): {query.name} → {model.name}", "compatible-gallery",
                                     query, model.name, store.get(model, experiment.test_gallery),
                                     lambda part, model=model: store.get(model, part), train_seconds=seconds)
        experiment.complexity.setdefault(model.name, model.complexity())

    def ensemble_of(part):
        return mean_of_compatible([(model.name, store.get(model, part)) for model, _ in compatible])

    gallery, uncertainty = ensemble_of(experiment.test_gallery)
    names = "+".join(model.name.split(":")[-1].split("-init")[0] for model, _ in compatible)
    key = f"compatible gallery ensemble ({method}): {query.name} → mean({names})"
    experiment.record_asymmetric(record, seed, key, "compatible-gallery", query, f"compatible({names})", gallery,
                                 lambda part: ensemble_of(part)[0], uncertainty=uncertainty,
                                 train_seconds=sum(seconds for _, seconds in compatible))
    if uncertainty is not None:
        index = GalleryIndex(gallery.space)
        index.add(gallery, uncertainty)
        pct = int(round(100 * cfg.reject_fraction))
        record(f"compatible gallery ensemble ({method}), reject {pct}% most uncertain gallery", "compatible-gallery-reject",
               query.name, f"compatible({names})",
               experiment.measure_query_model(query, gallery, index=index, reject_fraction=cfg.reject_fraction))
