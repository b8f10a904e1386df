"""One experiment runner for any dataset: ``asymret run CONFIG`` (a TOML file or a preset name).

A run config is data — the dataset to load, an :class:`~asymret.pipeline.experiment.ExperimentConfig` and
optionally a :class:`~asymret.pipeline.compare.CompareConfig` — checked strictly (an unknown key is an error that
names the known ones).  Presets ship with the package (``asymret.pipeline.presets``): the Fashion-MNIST demo, the
glyph benchmark, and the paper's protocols on CUB-200-2011, Cars196, SOP and In-Shop (which a user downloads).

    [dataset]
    kind = "cub200"                 # any load_dataset kind
    root = "/data/CUB_200_2011"     # or --root on the command line
    options = {}                    # extra loader arguments
    [experiment]
    profile = "default"             # optional: start from a named profile, then override
    train_size = 0                  # 0 = every training image; test_size = 0: every test image
    ...                             # any ExperimentConfig field; [[experiment.gallery]] tables for the models
    [compare]                       # optional: also run the compatibility-method comparison
    methods = ["distill-cos", "csd"]
    [rerank]                        # optional: also the re-ranking rows (global only vs + AMES)
    shortlist = 20
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from ..core.registry import Registry
from .compare import CompareConfig
from .rerank import RerankConfig
from .experiment import PROFILES, ExperimentConfig

__all__ = ["RunConfig", "load_run_config", "PRESETS", "run", "run_compare_only", "run_rerank_only"]

#: preset name → TOML file name in asymret/pipeline/presets
PRESETS: Registry[str] = Registry("preset")
for _file in sorted(resources.files(__package__).joinpath("presets").iterdir(), key=lambda f: f.name):
    if _file.name.endswith(".toml"):
        PRESETS.register(_file.name[: -len(".toml")], _file.name)


@dataclass
class RunConfig:
    """What ``asymret run`` runs: a dataset, an experiment and optionally the comparison."""

    name: str
    dataset_kind: str
    dataset_root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    compare: CompareConfig | None = None
    rerank: RerankConfig | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "run") -> "RunConfig":
        _strict(data, {"name", "dataset", "experiment", "compare", "rerank"}, "run config")
        dataset = dict(data.get("dataset") or {})
        _strict(dataset, {"kind", "root", "options"}, "[dataset]")
        if "kind" not in dataset:
            raise ValueError("the run config's [dataset] needs kind = \"...\" (a load_dataset kind)")
        experiment = dict(data.get("experiment") or {})
        profile = experiment.pop("profile", None)
        base = PROFILES[profile].to_dict() if profile else {}
        merged = ExperimentConfig.from_dict({**base, **experiment})
        sizes = {key: (getattr(merged, key) or None) for key in ("train_size", "test_size")}  # 0 in TOML = all
        merged = dataclasses.replace(merged, **sizes)
        compare = None
        if data.get("compare") is not None:
            values = dict(data["compare"])
            _strict(values, {f.name for f in dataclasses.fields(CompareConfig)}, "[compare]")
            if "methods" in values:
                values["methods"] = tuple(values["methods"])
            compare = CompareConfig(**values)
        return cls(name=str(data.get("name", name)), dataset_kind=str(dataset["kind"]), dataset_root=dataset.get("root") or None,
                   dataset_options=dict(dataset.get("options") or {}), experiment=merged, compare=compare,
                   rerank=cls._rerank(data.get("rerank")))

    @staticmethod
    def _rerank(values: Mapping[str, Any] | None) -> RerankConfig | None:
        if values is None:
            return None
        _strict(values, {f.name for f in dataclasses.fields(RerankConfig)}, "[rerank]")  # as [compare]: names the key
        return RerankConfig.from_dict(values)


def _strict(data: Mapping[str, Any], known: set[str], what: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} in the {what}; known: {', '.join(sorted(known))}")


def load_run_config(spec: str | os.PathLike) -> RunConfig:
    """A run config from a TOML file, or a preset by name (``asymret run glyphs``)."""
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"run config {path} does not exist")
        text, name = path.read_text(encoding="utf-8"), path.stem
    else:
        file_name = PRESETS.get_entry(str(spec))
        text, name = resources.files(__package__).joinpath("presets", file_name).read_text(encoding="utf-8"), file_name[:-5]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"run config {spec}: not valid TOML: {error}") from None
    return RunConfig.from_dict(data, name=name)


def experiment_of(config: RunConfig, workdir: str | os.PathLike, root: str | None = None, execution: Mapping[str, Any] | None = None):
    """The config's :class:`~asymret.pipeline.experiment.Experiment` on its dataset, caching in ``workdir``;
    ``execution``: its ``device`` / ``precision`` / ``workers`` (where it computes, not what it builds)."""
    from ..data import load_dataset
    from .experiment import Experiment

    dataset = load_dataset(config.dataset_kind, root or config.dataset_root, **config.dataset_options)
    return Experiment(config.experiment, dataset, workdir, **(execution or {}))


def run_compare_only(config: RunConfig, workdir: str | os.PathLike, out_dir: str | os.PathLike, methods: tuple[str, ...] | None = None,
                     root: str | None = None, command: str = "", execution: Mapping[str, Any] | None = None) -> tuple[list, dict]:
    """Only the config's comparison table (``methods``: a subset of its compatibility methods), its models from the
    cache in ``workdir`` when there, trained otherwise: what ``asymret compare --config …`` writes — the same table
    ``run`` writes in its ``compare`` folder, without the experiment's own rows."""
    from .compare import run_comparison

    if config.compare is None:
        raise ValueError(f"run config {config.name!r} has no [compare] table: nothing says which methods to compare")
    settings = dataclasses.replace(config.compare, methods=tuple(methods)) if methods else config.compare
    return run_comparison(experiment_of(config, workdir, root, execution), settings, out_dir, command=command)


def run_rerank_only(config: RunConfig, workdir: str | os.PathLike, out_dir: str | os.PathLike, methods: tuple[str, ...],
                    shortlist: int | None = None, root: str | None = None, command: str = "",
                    export_dir: str | os.PathLike | None = None, execution: Mapping[str, Any] | None = None) -> tuple[list, dict]:
    """Only the config's re-ranking rows for ``methods`` (its models, ψ's, codecs and re-rankers from the cache in
    ``workdir`` when there, trained otherwise): what ``asymret evaluate --config … --rerank …`` prints, and with
    ``export_dir`` what ``asymret rerank-train`` saves."""
    from .rerank import run_rerank

    if config.rerank is None:
        raise ValueError(f"run config {config.name!r} has no [rerank] table: nothing says how to re-rank")
    settings = dataclasses.replace(config.rerank, methods=tuple(methods), shortlist=shortlist or config.rerank.shortlist)
    return run_rerank(experiment_of(config, workdir, root, execution), settings, out_dir, command=command, export_dir=export_dir)


def run(config: RunConfig, workdir: str | os.PathLike, out_dir: str | os.PathLike, root: str | None = None, command: str = "",
        deploy_dir: str | os.PathLike | None = None, execution: Mapping[str, Any] | None = None) -> dict:
    """Run the experiment (and the comparison and the re-ranking rows, if configured); returns the results'
    metadata.  With validation classes the metadata's ``deployment`` names the configuration to deploy — a row of
    the experiment or a re-ranking row — chosen on them alone (``out_dir/deployment.json``); ``deploy_dir`` also
    writes it ready to serve (:mod:`.deploy`)."""
    from ..core.manifest import atomic_write_json
    from .compare import run_comparison
    from .deploy import choose_deployment, write_deployment

    experiment = experiment_of(config, workdir, root, execution)
    rows, meta = experiment.run(Path(out_dir) / "experiment", command=command)
    if experiment.validation is None and deploy_dir is not None:
        raise ValueError("--deploy chooses the configuration on validation classes: the run config needs validation_classes")
    if config.compare is not None:
        compare_rows, compare_meta = run_comparison(experiment, config.compare, Path(out_dir) / "compare", command=command)
        rows = [*rows, *compare_rows]  # its deployable rows (a validation R@1) are candidates too
        meta = {**meta, "compare_wall_seconds": compare_meta["wall_seconds"]}
    if config.rerank is not None:
        from .rerank import run_rerank

        rerank_rows, rerank_meta = run_rerank(experiment, config.rerank, Path(out_dir) / "rerank", command=command)
        rows = [*rows, *rerank_rows]  # a re-ranked search is a deployment candidate like the others
        meta = {**meta, "rerank_wall_seconds": rerank_meta["wall_seconds"]}
    if experiment.validation is not None:
        meta["deployment"] = choose_deployment(rows, experiment.complexity)
        atomic_write_json(Path(out_dir) / "deployment.json", meta["deployment"])
        if deploy_dir is not None:
            meta["deployment"]["folder"] = str(write_deployment(experiment, meta["deployment"], deploy_dir))
    return meta
