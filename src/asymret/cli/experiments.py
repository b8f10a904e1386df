"""Experiments from configs and profiles: ``rerank-train``, ``compare`` (a profile, or a config's [compare] table alone),
``run``, ``demo`` (and ``evaluate --config … --rerank …``'s rows); each takes ``--device``/``--precision``/``--workers`` and passes them to the
experiment (where it computes, never what it builds)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import (DeviceOpt, PrecisionOpt, RootOpt, WorkersOpt, app, check_device, command_line, fail, out, print_results, setup,
                     with_seeds)


def evaluate_rerank(config: str, rerank: str, shortlist: Optional[int], workdir: Optional[Path], seeds: Optional[str],
                    output: Optional[Path], root: Optional[str], export_dir: Optional[Path] = None, execution: Optional[dict] = None) -> None:
    """The run config's re-ranking rows for ``rerank`` (trained or read from ``workdir``), printed."""
    from ..pipeline.runner import load_run_config, run_rerank_only

    run_config = load_run_config(config)
    run_config.experiment = with_seeds(run_config.experiment, seeds)
    workdir = workdir or Path("runs") / run_config.name
    output = output or workdir / "evaluate-rerank"
    rows, meta = run_rerank_only(run_config, workdir, output, tuple(m.strip() for m in rerank.split(",")), shortlist, root,
                                 command_line(), export_dir=export_dir, execution=execution)
    print_results(rows, len(run_config.experiment.seeds), meta["wall_seconds"], output)


@app.command("rerank-train")
def rerank_train_cmd(
    config: str = typer.Option(..., "--config", help="a run config or preset with a \\[rerank] table (glyphs, glyphs-quick, …)"),
    method: str = typer.Option(..., "--rerank", help="ames or locore (comma-separated for both)"),
    output: Path = typer.Option(..., "--out", "-o", help="folder for the trained re-rankers: seed*/<mode>-<storage>-<method>/"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="cache of models, embeddings and re-rankers (default runs/<name>)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="override the config's seeds, e.g. 0"),
    root: Optional[str] = RootOpt,
    device: str = DeviceOpt, precision: str = PrecisionOpt, workers: Optional[int] = WorkersOpt,
) -> None:
    """Train the config's re-rankers (every mode and storage of its \\[rerank] table, on the training classes, the
    fusion chosen on the validation classes; reused from --workdir's cache when there) and save each with its
    database codec (and descriptor map) in --out; prints their rows as `evaluate --rerank` does."""
    setup()
    check_device(device, precision)
    if "maxsim" in method:
        fail("MaxSim is training-free: there is nothing to train (evaluate it with `asymret evaluate --config … --rerank maxsim`)")
    evaluate_rerank(config, method, None, workdir, seeds, None, root, export_dir=output,
                    execution={"device": device, "precision": precision, "workers": workers})
    out.print(f"re-rankers saved in {output}/")


@app.command("compare")
def compare_cmd(
    profile: Optional[str] = typer.Option(None, "--profile", help="data/model profile shared with the demo: default (the default), full, tiny"),
    config: Optional[str] = typer.Option(None, "--config", help="instead: a run config or preset with a \\[compare] table (glyphs-pretrained, …): "
                                         "its comparison alone, as `asymret run` writes it"),
    methods: Optional[str] = typer.Option(None, "--methods", help="comma-separated subset of the compatibility methods"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="cache of models (default runs/demo, shared with `asymret demo`; "
                                           "with --config runs/<name>, shared with `asymret run`)"),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="where results.json, results.md and plots go (default runs/compare/results; "
                                          "with --config <workdir>/compare; docs/compare regenerates the committed ones)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="override the profile's or config's seeds, e.g. 0,1,2"),
    root: Optional[str] = RootOpt,
    device: str = DeviceOpt, precision: str = PrecisionOpt, workers: Optional[int] = WorkersOpt,
) -> None:
    """Every query-model compatibility method side by side with CMCE (and their combinations): on Fashion-MNIST
    (--profile), or a run config's \\[compare] table alone (--config)."""
    setup()
    check_device(device, precision)
    import dataclasses

    from ..data import load_dataset
    from ..pipeline import PROFILES, Experiment
    from ..pipeline.compare import CompareConfig, run_comparison

    if profile and config:
        fail("--profile and --config name two different experiments: give one")
    execution = {"device": device, "precision": precision, "workers": workers}
    # checked before any training starts: a typo should not cost the minutes of training before it is reached
    chosen = _compatibility_methods(methods)
    if config:
        from ..pipeline.runner import load_run_config, run_compare_only

        run_config = load_run_config(config)
        run_config.experiment = with_seeds(run_config.experiment, seeds)
        workdir = workdir or Path("runs") / run_config.name
        output = output or workdir / "compare"
        rows, meta = run_compare_only(run_config, workdir, output, chosen, root, command_line(), execution)
        print_results(rows, len(run_config.experiment.seeds), meta["wall_seconds"], output)
        return
    profile = profile or "default"
    if profile not in PROFILES:
        fail(f"unknown profile {profile!r}: {', '.join(PROFILES)}")
    experiment_config = with_seeds(PROFILES[profile], seeds)
    compare = CompareConfig()
    if chosen:
        compare = dataclasses.replace(compare, methods=chosen)
    if profile == "tiny":
        compare = dataclasses.replace(compare, raml_gallery="gallery:convnet-m")
    output = output or Path("runs/compare/results")
    dataset = load_dataset("fashion-mnist", root)
    experiment = Experiment(experiment_config, dataset, (workdir or Path("runs/demo")) / profile, **execution)
    rows, meta = run_comparison(experiment, compare, output, command=command_line())
    print_results(rows, len(experiment_config.seeds), meta["wall_seconds"], output)


def _compatibility_methods(methods: Optional[str]) -> Optional[tuple[str, ...]]:
    """``--methods`` as registry keys (an unknown one is the registry's one-line error), or None for every method."""
    if not methods:
        return None
    from ..compat.query_train import QUERY_METHODS

    return tuple(QUERY_METHODS.key(m.strip()) for m in methods.split(",") if m.strip())


@app.command("run")
def run_cmd(
    config: str = typer.Argument(..., help="a run config (TOML file) or a preset: fashion-mnist, glyphs(-quick), glyphs-pretrained(-quick), icons(-quick), icons-pretrained, cub200, cars196, sop, inshop"),
    root: Optional[str] = typer.Option(None, "--root", help="the dataset's folder (for the benchmarks you downloaded)"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="cache of models and embeddings (default runs/<name>)"),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="results folder (default runs/<name>/results)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="override the config's seeds, e.g. 0,1,2"),
    deploy: Optional[Path] = typer.Option(None, "--deploy", help="write the configuration chosen on validation classes ready to serve "
                                          "(index + exported query model + manifest): asymret serve --deploy DIR"),
    device: str = DeviceOpt, precision: str = PrecisionOpt, workers: Optional[int] = WorkersOpt,
) -> None:
    """Run an experiment described by a config file (the demo, the glyph benchmark, the paper's protocols)."""
    setup()
    check_device(device, precision)
    from ..eval.report import read_results_json
    from ..pipeline.runner import load_run_config, run

    run_config = load_run_config(config)
    run_config.experiment = with_seeds(run_config.experiment, seeds)
    workdir = workdir or Path("runs") / run_config.name
    output = output or workdir / "results"
    meta = run(run_config, workdir, output, root=root, command=command_line(), deploy_dir=deploy,
               execution={"device": device, "precision": precision, "workers": workers})
    _, rows = read_results_json(output / "experiment" / "results.json")
    print_results(rows, len(run_config.experiment.seeds), meta["wall_seconds"], output)
    choice = meta.get("deployment")
    if choice:
        cost = f", query side {choice['query_mflops']:.1f} MFLOPs/image" if choice.get("query_mflops") else ""
        out.print(f"deploy (chosen on validation classes): {choice['setting']} — validation R@1 {100 * choice['validation_recall@1']:.1f}, "
                  f"test R@1 {100 * choice['test_recall@1']:.1f}{cost}" + (f"; written to {choice['folder']}" if choice.get("folder") else ""),
                  soft_wrap=True, markup=False, highlight=False)


@app.command("demo")
def demo_cmd(
    profile: str = typer.Option("default", "--profile", help="default (≈10 min on 2 cores), full (all data), tiny (seconds)"),
    full: bool = typer.Option(False, "--full", help="shorthand for --profile full"),
    workdir: Path = typer.Option(Path("runs/demo"), "--workdir", help="cache of models, embeddings, transformations, indexes"),
    output: Path = typer.Option(Path("runs/demo/results"), "--out", "-o", help="where results.json, results.md and plots go (docs/results regenerates the committed ones)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="override the profile's seeds, e.g. 0,1,2"),
    root: Optional[str] = RootOpt,
    device: str = DeviceOpt, precision: str = PrecisionOpt, workers: Optional[int] = WorkersOpt,
) -> None:
    """Run the whole pipeline on Fashion-MNIST offline and print the results table."""
    setup()
    check_device(device, precision)
    import torch

    from ..data import load_dataset
    from ..pipeline import PROFILES, Experiment

    name = "full" if full else profile
    if name not in PROFILES:
        fail(f"unknown profile {name!r}: {', '.join(PROFILES)}")
    config = with_seeds(PROFILES[name], seeds)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dataset = load_dataset("fashion-mnist", root)
    experiment = Experiment(config, dataset, workdir / name, device=device, precision=precision, workers=workers)
    rows, meta = experiment.run(output, command=command_line())
    print_results(rows, len(config.seeds), meta["wall_seconds"], output, files="results.json, results.md, recall_at_1.png, risk_coverage.png")
    seed = config.seeds[0]
    query_dir = experiment.cache.directory("encoder", f"seed{seed}/{config.query.name}")
    exported = workdir / "query-onnx"
    out.print(f"\nsearch it from a browser (the query model exported to ONNX, the seed-{seed} CMCE index served):\n"
              f"  asymret export-query -q {query_dir} -o {exported}\n"
              f"  asymret serve -i {experiment.workdir / 'index' / f'seed{seed}'} -q {exported} --dataset fashion-mnist "
              f"--results {output} --worst-queries 200   # then open http://127.0.0.1:8000/", soft_wrap=True, markup=False, highlight=False)
