"""What every command shares: the app with its one error path, the common options, loading what the options name,
and the seed override, command line and results printout written once."""
from __future__ import annotations

import dataclasses
import errno
import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape

from ..compat.config import PsiConfig

__all__ = ["app", "main", "out", "err", "fail", "setup", "load_data", "load_encoder_at", "load_query_model_at", "open_store",
           "with_seeds", "command_line", "print_results", "parse_weights", "DatasetOpt", "RootOpt", "SplitOpt", "SizeOpt",
           "StoreOpt", "RuntimeOpt", "DeviceOpt", "PrecisionOpt", "WorkersOpt", "check_device", "PSI"]

F = TypeVar("F", bound=Callable[..., Any])


class _OneLineErrors(typer.Typer):
    """Every command's failure ends in one ``error:`` line and exit code 2 — never a traceback, unless ``--debug``
    (or ``ASYMRET_DEBUG=1``) asks for it.  Done once here, for every command, instead of per command."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(function: F) -> F:
            @functools.wraps(function)
            def guarded(*call_args: Any, **call_kwargs: Any) -> Any:
                try:
                    return function(*call_args, **call_kwargs)
                except (typer.Exit, typer.Abort, KeyboardInterrupt, click.exceptions.ClickException):
                    raise
                except Exception as error:  # noqa: BLE001 - the one place errors become a line
                    if _debugging():
                        raise
                    fail(_one_line(error))

            return register(guarded)

        return decorator


_debug_requested = False  # set by --debug for the current invocation
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _debugging() -> bool:
    return _debug_requested or os.environ.get("ASYMRET_DEBUG", "") not in ("", "0")


def _one_line(error: BaseException) -> str:
    """What went wrong, in one line: the message of the errors asymret raises on purpose (and of a missing optional
    dependency or an unreachable cluster), the type too otherwise."""
    from ..core.manifest import SpaceMismatchError
    from ..data.dataset import ImageLoadError

    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (ValueError, FileNotFoundError, SpaceMismatchError, ImageLoadError, KeyError, TypeError, ImportError,
                          ConnectionError)):
        return message
    if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:  # a full disk is the machine's, not a bug: no traceback
        return message
    return f"{type(error).__name__}: {message} (run with --debug for the traceback)"


app = _OneLineErrors(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                     help="asymret — asymmetric image retrieval: a light query model, a heavy (ensemble) gallery, one space.")


def _print_version(value: bool) -> None:
    if value:
        from ..core.version import __version__

        out.print(f"asymret {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _global_options(debug: bool = typer.Option(False, "--debug", help="show the full traceback when a command fails"),
                    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                                 help="print asymret's version and exit")) -> None:
    global _debug_requested
    _debug_requested = debug


def main() -> None:  # pragma: no cover
    app()


out = Console()
err = Console(stderr=True)

PSI = PsiConfig()  # ψ defaults, from the one place they are written
DatasetOpt = typer.Option("fashion-mnist", "--dataset", "-d", help="dataset kind: fashion-mnist, glyphs, icons, folder, csv, cub200, cars196, sop, inshop; "
                          "folder auto-detects train/ and test/ sub-folders, folder:class-half splits a flat folder's classes in two")
RootOpt = typer.Option(None, "--root", help="dataset root (folder, CSV file, or benchmark folder); default for fashion-mnist: the Debian package's path")
SplitOpt = typer.Option(None, "--split", help="split to use (train/test); default: the step's natural split")
SizeOpt = typer.Option(None, "--size", min=1, help="use a seeded, class-stratified random subset of this many images")
StoreOpt = typer.Option(Path("runs/embeddings"), "--store", help="embedding store folder (cached, resumable)")
RuntimeOpt = typer.Option("torch", "--runtime", help="inference engine for embeddings: torch (eager) or onnx (exported once "
                          "into the store, run by onnxruntime; the same store folders, equal within float tolerance)")

DeviceOpt = typer.Option("auto", "--device", help="where models run: auto (the first GPU if there is one, else the CPU), "
                         "cpu, cuda or cuda:N")
PrecisionOpt = typer.Option("fp32", "--precision", help="compute precision of training and extraction: fp32, bf16 (autocast; "
                            "CPU or GPU) or fp16 (CUDA only, with a grad scaler); stored embeddings stay float32")
WorkersOpt = typer.Option(None, "--workers", min=0, help="image-decoding threads (default: the cores but one; 0: the main "
                          "thread) — the same results whatever the number")


def check_device(device: str, precision: str = "fp32") -> str:
    """``device`` checked before any work (a device that is not there, or a precision it lacks, is one line)."""
    from ..core.device import resolve_device, resolve_precision

    resolve_precision(precision, resolve_device(device))
    return device


def fail(message: str) -> NoReturn:
    """End the command with one ``error:`` line and exit code 2 (under ``--debug``, re-raise the error being handled)."""
    if _debugging() and sys.exc_info()[1] is not None:
        raise  # --debug: the exception being handled, with its traceback, instead of the one line
    # stderr (keeps `search --json` output parseable), no markup in the message (paths, "name [fingerprint …]"),
    # and no hard wrapping so paths and fingerprints stay on one line
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def setup() -> None:
    from ..core.progress import setup_logging

    setup_logging()


def load_data(kind: str, root: Optional[str], split: Optional[str], size: Optional[int], seed: int = 0, role: Optional[str] = None):
    """The dataset the options name (``folder:class-half`` = a flat folder split by classes), sampled to ``size``."""
    from ..data import load_dataset
    from ..data.loaders import DATASET_LOADERS, canonical_kind

    given = kind
    kind, _, split_by = kind.partition(":")
    meta = DATASET_LOADERS.meta[canonical_kind(kind)]
    if root is None and not meta.get("builds_itself") and meta.get("default_root") is None:  # said in the flags' words
        what = "the CSV file" if canonical_kind(kind) == "csv" else "the dataset folder"
        fail(f"--dataset {given} needs --root PATH ({what})")
    dataset = load_dataset(kind, root, **({"split_by": split_by} if split_by else {}))
    if split or role:
        dataset = dataset.select(split=split, role=role)
    if size:
        dataset = dataset.sample(size, seed=seed)
    if len(dataset) == 0:
        fail(f"{dataset.name} is empty")
    return dataset


def load_encoder_at(path: Path):
    """A torch encoder folder (training, fitting ψ, exporting need the torch model)."""
    from ..encoders import load_encoder

    try:
        return load_encoder(path)
    except (FileNotFoundError, ValueError) as error:
        fail(f"cannot load encoder from {path}: {error}")


def load_query_model_at(path: Path, device: str = "auto"):
    """A query model folder: a torch encoder or one exported by ``asymret export-query`` (run by onnxruntime on
    ``device``'s provider)."""
    from ..encoders.onnx import load_query_model

    try:
        return load_query_model(path, device)
    except (FileNotFoundError, ValueError) as error:
        fail(f"cannot load query model {path}: {error}")


def open_store(root: Path, shard_size: Optional[int] = None, runtime: str = "torch", device: str = "auto", precision: str = "fp32",
               workers: Optional[int] = None, change_detection: str = "stat"):
    from ..store import EmbeddingStore

    return EmbeddingStore(root, shard_size=shard_size, runtime=runtime, device=device, precision=precision, workers=workers,
                          change_detection=change_detection)


def with_seeds(config: Any, seeds: Optional[str]) -> Any:
    """``config`` (any dataclass with ``seeds``) with the ``--seeds`` override, e.g. ``0,1,2``, if given."""
    if not seeds:
        return config
    return dataclasses.replace(config, seeds=tuple(int(s) for s in seeds.split(",")))


def command_line() -> str:
    """The command as typed, recorded with the results."""
    return "asymret " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def print_results(rows: Sequence[Any], seeds: int, seconds: float, output: Path, files: str = "") -> None:
    """The results table (markdown, unwrapped) and where the results went."""
    from ..eval.report import markdown_table

    out.print(markdown_table(rows), soft_wrap=True, markup=False, highlight=False)
    out.print(f"\n{seeds} seeds, {seconds:.0f} s; results in {output}/{f' ({files})' if files else ''}")


def parse_weights(text: str) -> dict[str, float]:
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value) if value else 1.0
        except ValueError:
            fail(f"cannot read loss weight {part!r}: use name=weight, e.g. similarity=1,dual-ce=0.1")
    return weights
