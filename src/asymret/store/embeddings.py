"""The embedding store: a dataset's embeddings under one model, on disk, in shards, resumable.

Layout: ``root/<model fingerprint>-<output>/<dataset fingerprint>/``
  ``layout.json``           the shard size S, written before the first shard: it fixes the shard boundaries of the
                            folder, so a resumed run (or another machine) continues with the same S
  ``shard_00000.npy``       float32 vectors of rows [i·S, (i+1)·S) that could be read
  ``shard_00000.json``      the ids of those rows and the ids that failed to load, what each image file was when
                            embedded (its stamp) and the vectors' sha256 (written after the vectors: its presence
                            marks the shard finished)
  ``manifest.json``         written last, when every shard is finished: fingerprints, count, dim, failures, the
                            shards' sha256

Shards are independent (a machine can compute any subset: ``shards=``), an interrupted run recomputes only the
unfinished shards, and asking again for the same (model, dataset) reads the stored result.  Boundaries depend only
on the row count and S, never on timing, so machines computing shards independently agree on them.  The default S
(:data:`DEFAULT_SHARD_SIZE`) is small enough that a killed run at 224 px loses at most about a minute of the slowest
model's work on a 2-core CPU.

The store is keyed on what the pixels are, not only on their names (:mod:`.freshness`): an image file edited or
replaced since it was embedded (another size or modification time; with ``change_detection="content"`` other
bytes) is re-embedded by the next extraction and every other vector reused, and reading refuses the stale vectors.
Every shard is checked against its sha256 when read: a corrupted shard is one error naming the file.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..data.dataset import ImageDataset
from ..encoders.encoder import Encoder
from ..core.device import on_device, resolve_device, resolve_precision, resolve_workers
from ..core.manifest import MANIFEST_NAME, atomic_write_bytes, atomic_write_json, hash_file, read_manifest, write_manifest
from ..core.progress import log, progress_bar
from ..core.space import Embeddings, Space
from ..encoders.local import LocalSpec, local_space
from ..encoders.onnx import RUNTIMES, onnx_providers
from .batches import BatchResult, local_batches
from .freshness import (
    CHECKSUM_DIGITS,
    Stamps,
    StaleEmbeddingsError,
    changed,
    check_change_detection,
    current_stamps,
    read_marker,
    read_shard,
    shard_checksum,
)

#: what the store holds per image: the embedding, the pooled backbone vector, or local descriptors
#: (``local-k<budget>[@<layer>]``, see :class:`asymret.encoders.local.LocalSpec`)
OUTPUTS = ("embedding", "pooled", "local-k<budget>[@<layer>]")
#: images per shard for new store folders: 2 batches of 128.  EfficientNet-Lite0 at 224 px embeds ≈ 25 images/s on
#: 2 cores (docs/bench_extraction.json: ≈ 100/s at 112 px), so a kill loses ≈ 10 s; a 4-GFLOP model ≈ 1.5 min.
DEFAULT_SHARD_SIZE = 256
LAYOUT_FILE = "layout.json"


#: where ``runtime="onnx"`` keeps its exports, inside the store root
ONNX_CACHE = "_onnx"
#: extraction engines: this process, or Ray Data actors (the ``scale`` extra)
ENGINES = ("local", "ray")
@dataclass
class ExtractionReport:
    computed_shards: int
    reused_shards: int
    failed_ids: list[str]
    #: images re-embedded because their files changed since they were embedded (the rest of their shards reused)
    changed_ids: list[str] = field(default_factory=list)


class EmbeddingStore:
    """Extracts and caches embeddings (``output="embedding"``) or pooled backbone features (``"pooled"``)."""

    def __init__(self, root: str | os.PathLike, shard_size: int | None = None, batch_size: int = 128, runtime: str = "torch",
                 device: str = "auto", precision: str = "fp32", workers: int | None = None, change_detection: str = "stat") -> None:
        """``shard_size``: images per shard of *new* folders (default :data:`DEFAULT_SHARD_SIZE`); a folder
        already started keeps its own (see :meth:`shard_size_of`).  ``runtime``: ``"torch"`` (eager) or ``"onnx"``
        (the model exported once into ``root/_onnx/`` and run by onnxruntime; embeddings only) — the same store
        folders either way: the embeddings agree within float tolerance, and each shard records its runtime.

        ``device`` (``auto|cpu|cuda|cuda:N``): where the torch runtime runs the model (moved there for an
        extraction and back); the onnx runtime on that device's onnxruntime provider
        (:func:`asymret.encoders.onnx.onnx_providers`: CUDA when onnxruntime has it, else the CPU).  ``precision``
        (``fp32|bf16|fp16``): the forward pass's autocast; vectors are stored as float32 whatever it is, each shard and the manifest record it, and a folder
        holding shards of one precision refuses to be continued in another.  ``workers``: image-decoding threads
        (None: from the cores; 0: the main thread) — the same shards, byte for byte, whatever their number.

        ``change_detection`` (``stat|content``): how an image file edited since it was embedded is noticed — its
        size and modification time, or also a hash of its bytes (every file read on every check)."""
        if shard_size is not None and int(shard_size) < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        self.runtime = runtime
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        if runtime == "onnx" and self.precision != "fp32":
            raise ValueError(f"runtime onnx computes in fp32: use --precision fp32 (or --runtime torch for {self.precision})")
        #: the device setting onnxruntime gets (:func:`onnx_providers` reads it: ``auto`` may fall back to the CPU)
        self.onnx_device = device if runtime == "onnx" else "cpu"
        if runtime == "onnx":
            onnx_providers(device)  # an explicit CUDA device without onnxruntime's CUDA provider: refused here
        self.workers = resolve_workers(workers)
        self.change_detection = check_change_detection(change_detection)
        self.root = Path(root)
        self.requested_shard_size = None if shard_size is None else int(shard_size)
        self.shard_size = self.requested_shard_size or DEFAULT_SHARD_SIZE
        self.batch_size = int(batch_size)

    # ------------------------------------------------------------------ paths and spaces
    @staticmethod
    def space_of(encoder: Encoder, output: str) -> Space:
        if output == "embedding":
            return encoder.space()
        if output == "pooled":
            return Space(encoder.backbone_fingerprint(), encoder.feature_dim, normalized=False, name=f"{encoder.name}:pooled")
        if LocalSpec.is_output(output):
            return local_space(encoder, LocalSpec.from_output(output))
        raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")

    def directory(self, encoder: Encoder, dataset: ImageDataset, output: str = "embedding") -> Path:
        # keyed by the model, not the space: two models may share a space (a compatibility-trained query model
        # lives in its gallery model's space) but never their embeddings
        key = encoder.fingerprint() if output == "embedding" else self.space_of(encoder, output).fingerprint
        return self.root / f"{key}-{output}" / dataset.fingerprint()

    def shard_size_of(self, directory: Path) -> int:
        """The shard size a store folder was started with (its manifest or layout file), else this store's."""
        for name in ("manifest.json", LAYOUT_FILE):
            path = directory / name
            if path.is_file():
                size = json.loads(path.read_text()).get("shard_size")
                if size:
                    return int(size)
        return self.shard_size

    def num_shards(self, dataset: ImageDataset, shard_size: int | None = None) -> int:
        return max(1, -(-len(dataset) // (shard_size or self.shard_size)))

    # ------------------------------------------------------------------ extraction
    def extract(
        self,
        encoder: Encoder,
        dataset: ImageDataset,
        output: str = "embedding",
        shards: Iterable[int] | None = None,
        engine: str = "local",
        address: str | None = None,
    ) -> ExtractionReport:
        """Compute the missing shards (all, or only ``shards``) and write the manifest once all are there.

        ``engine="local"`` runs the model in this process; ``engine="ray"`` runs it in Ray Data actors (a local
        Ray started here, or the cluster at ``address``) — the same batches, so the same shards, markers and
        manifest, written here as each shard completes (a killed job keeps its finished shards)."""
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        space = self.space_of(encoder, output)
        # an exported (ONNX) model computes the embedding only: any other output runs through torch
        runtime = self.runtime if output == "embedding" else "torch"
        directory = self.directory(encoder, dataset, output)
        directory.mkdir(parents=True, exist_ok=True)
        size = self.shard_size_of(directory)
        if self.requested_shard_size and self.requested_shard_size != size:
            if shards is not None:  # shard numbers only mean something with the folder's boundaries
                raise ValueError(f"{directory} was started with shard size {size}, and shard numbers refer to its shards: "
                                 f"pass shard size {size} (or none) instead of {self.requested_shard_size}")
            log.info("%s was started with shard size %d: continuing with it (not %d)", directory, size, self.requested_shard_size)
        if not (directory / LAYOUT_FILE).is_file():
            atomic_write_json(directory / LAYOUT_FILE, {"shard_size": size})  # before any shard: fixes the boundaries
        count = self.num_shards(dataset, size)
        wanted = list(range(count)) if shards is None else sorted(set(int(s) for s in shards))
        if wanted and (wanted[0] < 0 or wanted[-1] >= count):
            raise ValueError(f"shards must be in 0..{count - 1} for {dataset.name} (got {wanted})")
        finished, stale, stamps = self._survey(directory, dataset, count, size)
        todo = [s for s in wanted if s not in finished]
        precision = self.precision if runtime == "torch" else "fp32"
        if todo:
            self._check_precision(directory, finished | set(stale), precision)
            # the folder is no longer whole until every shard is again: a crash from here on leaves it to be resumed
            (directory / MANIFEST_NAME).unlink(missing_ok=True)
        # the batches of every shard to compute (a stale one: only its changed rows), in order: the one unit of work
        batches = [(shard, rows[start : start + self.batch_size]) for shard in todo
                   for rows in [stale.get(shard, self._shard_rows(dataset, shard, size))] for start in range(0, len(rows), self.batch_size)]
        keep = {shard: stale[shard] for shard in todo if shard in stale}
        changed_ids = [item for shard in todo if shard in stale for item in dataset.ids[stale[shard]].tolist()]
        if changed_ids:
            log.info("%d images of %s changed since they were embedded (e.g. %s): re-embedding them", len(changed_ids),
                     dataset.name, changed_ids[0])
        failed: list[str] = []
        if batches:
            if engine == "ray":
                from .ray_engine import ray_batches

                results = ray_batches(encoder, dataset, output, runtime, self.root / ONNX_CACHE, [rows for _, rows in batches], address,
                                      device=self.device if runtime == "torch" else None, precision=precision,
                                      onnx_device=self.onnx_device)
                failed = self._write_shards(directory, dataset, space, batches, results, runtime,
                                            f"embed {dataset.name} with {encoder.name}", precision, stamps, keep, size)
            else:
                device = self.device if runtime == "torch" else resolve_device("cpu")
                with on_device(encoder, device=device):  # and back where it was, whatever happens
                    results = local_batches(encoder, dataset, output, runtime, self.root / ONNX_CACHE, [rows for _, rows in batches],
                                            device, precision, self.workers, onnx_device=self.onnx_device)
                    failed = self._write_shards(directory, dataset, space, batches, results, runtime,
                                                f"embed {dataset.name} with {encoder.name}", precision, stamps, keep, size)
            finished.update(todo)
        reused = len(wanted) - len(todo)
        if len(finished) == count:
            self._finalize(directory, encoder, dataset, output, space, size)
        return ExtractionReport(len(todo), reused, failed, changed_ids)

    def _check_precision(self, directory: Path, finished: set[int], precision: str) -> None:
        """Refuse to add ``precision`` shards to a folder whose finished shards were computed in another."""
        held = sorted({read_marker(directory / f"shard_{s:05d}.json").get("precision", "fp32") for s in finished})
        if held and held != [precision]:
            raise ValueError(f"{directory} holds shards computed in {', '.join(held)}: extracting the others in {precision} would mix "
                             f"precisions in one folder; use precision {held[0]} (or another store)")

    def _write_shards(self, directory: Path, dataset: ImageDataset, space: Space, batches: list[tuple[int, np.ndarray]],
                      results: Iterable[BatchResult], runtime: str, title: str, precision: str = "fp32",
                      stamps: dict[int, Stamps | None] | None = None, keep: dict[int, np.ndarray] | None = None,
                      shard_size: int | None = None) -> list[str]:
        """Collect the engine's results (in batch order) per shard; write each shard when its last batch is in.

        ``stamps``: per shard, what its images were before they were read (recorded with it); ``keep``: the shards of
        which only these rows were recomputed — their other vectors come from the shard as it was."""
        stamps, keep = stamps or {}, keep or {}
        failed: list[str] = []
        last_batch_of = {shard: i for i, (shard, _) in enumerate(batches)}
        vectors: list[np.ndarray] = []
        ids: list[str] = []
        shard_failed: list[str] = []
        with progress_bar(sum(len(rows) for _, rows in batches), title) as advance:
            for i, ((shard, rows), (batch_vectors, kept, bad)) in enumerate(zip(batches, results)):
                for item_id, reason in bad:
                    log.warning("skipping unreadable image %s: %s", item_id, reason)
                shard_failed += [item_id for item_id, _ in bad]
                if len(kept):
                    vectors.append(batch_vectors)
                    ids += dataset.ids[kept].tolist()
                advance(len(rows))
                if last_batch_of[shard] == i:
                    matrix = np.concatenate(vectors) if vectors else np.zeros((0, space.dim), np.float32)
                    matrix = matrix.astype(np.float32)
                    if shard in keep:
                        matrix, ids, shard_failed = self._merge(directory, dataset, shard, shard_size, keep[shard], matrix, ids,
                                                                shard_failed, space.dim)
                    self._write_shard(directory, shard, matrix, ids, shard_failed, runtime, precision, stamps.get(shard))
                    failed += shard_failed
                    vectors, ids, shard_failed = [], [], []
        return failed

    def _shard_rows(self, dataset: ImageDataset, shard: int, shard_size: int | None = None) -> np.ndarray:
        size = shard_size or self.shard_size
        return np.arange(shard * size, min(len(dataset), (shard + 1) * size))

    def _survey(self, directory: Path, dataset: ImageDataset, count: int, shard_size: int
                ) -> tuple[set[int], dict[int, np.ndarray], dict[int, Stamps | None]]:
        """Which shards are finished and hold the images as they are now, which hold some changed images (those
        rows), and what every shard's images are now (recorded with whatever is recomputed).

        A shard counts as finished when its marker (written after its vectors) accounts for exactly its rows — the
        id check catches a shard written with other boundaries (an older folder without layout file) — and its
        vectors are there.  A marker of a folder from before stamps and checksums is adopted as it is (it gains them).
        """
        finished: set[int] = set()
        stale: dict[int, np.ndarray] = {}
        stamps: dict[int, Stamps | None] = {}
        for shard in range(count):
            rows = self._shard_rows(dataset, shard, shard_size)
            stamps[shard] = now = current_stamps(dataset, rows, self.change_detection)
            marker, vectors = directory / f"shard_{shard:05d}.json", directory / f"shard_{shard:05d}.npy"
            if not marker.is_file() or not vectors.is_file():
                continue
            try:
                meta = read_marker(marker)
            except ValueError as error:
                log.warning("%s: recomputing it", error)
                continue
            if sorted(meta["ids"] + meta["failed"]) != sorted(dataset.ids[rows].tolist()):
                log.warning("%s does not hold rows of shard %d with shard size %d: recomputing it", marker, shard, shard_size)
                continue
            differ = None if now is None else changed(meta.get("stamps"), now, dataset.ids[rows].tolist(), self.change_detection)
            if differ:
                changed_rows = set(differ)
                stale[shard] = np.array([row for row, item in zip(rows, dataset.ids[rows].tolist()) if item in changed_rows])
                continue
            if "sha256" not in meta or (now is not None and differ is None):
                self._adopt(marker, vectors, meta, now)
            finished.add(shard)
        return finished, stale, stamps

    @staticmethod
    def _adopt(marker: Path, vectors: Path, meta: dict, stamps: Stamps | None) -> None:
        """A marker from before stamps and checksums: the images taken as they are now, the vectors as they are."""
        meta = {**meta, "sha256": meta.get("sha256") or hash_file(vectors, length=CHECKSUM_DIGITS)}
        if stamps is not None:
            meta["stamps"] = stamps
        atomic_write_json(marker, meta)

    def _merge(self, directory: Path, dataset: ImageDataset, shard: int, shard_size: int | None, recomputed: np.ndarray,
               vectors: np.ndarray, ids: list[str], failed: list[str], dim: int) -> tuple[np.ndarray, list[str], list[str]]:
        """A shard whose ``recomputed`` rows were embedded again: their new vectors (or failures) and the shard's other
        vectors as stored, in row order — what computing the whole shard would give."""
        meta = read_marker(directory / f"shard_{shard:05d}.json")
        old = read_shard(directory / f"shard_{shard:05d}.npy", meta.get("sha256"))
        vector_of = dict(zip(meta["ids"], old))
        redone, kept_now = set(dataset.ids[recomputed].tolist()), set(ids)
        vector_of.update((item, vector) for item, vector in zip(ids, vectors))
        merged_ids, merged, merged_failed = [], [], []
        for item in dataset.ids[self._shard_rows(dataset, shard, shard_size)].tolist():
            if item in vector_of and (item in redone) == (item in kept_now):  # a redone image that failed now has no vector
                merged_ids.append(item)
                merged.append(vector_of[item])
            else:
                merged_failed.append(item)
        matrix = np.stack(merged).astype(np.float32) if merged else np.zeros((0, dim), np.float32)
        return matrix, merged_ids, merged_failed

    def _write_shard(self, directory: Path, shard: int, vectors: np.ndarray, ids: list[str], failed: list[str], runtime: str = "torch",
                     precision: str = "fp32", stamps: Stamps | None = None) -> None:
        bad = ~np.isfinite(vectors).all(axis=1) if len(vectors) else np.zeros(0, dtype=bool)
        if bad.any():  # never store a broken embedding: it would poison every search that reads it
            raise ValueError(f"the model produced NaN or inf for {int(bad.sum())} images of shard {shard} "
                             f"(e.g. {np.asarray(ids)[bad][0]!r}); nothing of this shard was written")
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(vectors), allow_pickle=False)
        atomic_write_bytes(directory / f"shard_{shard:05d}.npy", buffer.getbuffer())
        meta = {"ids": ids, "failed": failed, "count": len(ids), "runtime": runtime, "sha256": shard_checksum(buffer.getbuffer())}
        if stamps is not None:
            meta["stamps"] = stamps
        if precision != "fp32":  # fp32 shards read as they always did (a marker without it is fp32)
            meta["precision"] = precision
        atomic_write_json(directory / f"shard_{shard:05d}.json", meta)

    def _finalize(self, directory: Path, encoder: Encoder, dataset: ImageDataset, output: str, space: Space, shard_size: int) -> None:
        metas = [read_marker(directory / f"shard_{s:05d}.json") for s in range(self.num_shards(dataset, shard_size))]
        write_manifest(directory, "embedding-set", {
            "space": space.to_dict(),
            "output": output,
            "encoder": {"name": encoder.name, "fingerprint": encoder.fingerprint(), "config": encoder.config},
            "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "size": len(dataset)},
            "count": sum(m["count"] for m in metas),
            "dim": space.dim,
            "normalized": space.normalized,
            "dtype": "float32",
            "num_shards": len(metas),
            "shard_size": shard_size,
            "failed_ids": [item for m in metas for item in m["failed"]],
            "runtimes": sorted({m.get("runtime", "torch") for m in metas}),  # shards may come from either engine
            "precision": metas[0].get("precision", "fp32") if metas else "fp32",  # one per folder (see _check_precision)
            "shard_sha256": [m.get("sha256") for m in metas],  # checked on every read
            "change_detection": self.change_detection,
        })

    # ------------------------------------------------------------------ reading
    def get(self, encoder: Encoder, dataset: ImageDataset, output: str = "embedding") -> Embeddings:
        """The stored embeddings, extracting whatever is missing or changed first (images edited since they were
        embedded are embedded again; a folder from before stamps gains them)."""
        directory = self.directory(encoder, dataset, output)
        if (directory / MANIFEST_NAME).is_file():
            try:
                embeddings, unstamped = self._read(directory, dataset, self.change_detection)
                if not unstamped:
                    return embeddings
            except StaleEmbeddingsError as error:
                log.info("%s", error)
        self.extract(encoder, dataset, output)
        return self._read(directory, dataset, self.change_detection)[0]

    def find(self, space_fingerprint: str, dataset: ImageDataset, output: str = "embedding") -> Embeddings:
        """Stored embeddings of ``dataset`` in the space ``space_fingerprint``, found without the model.

        This is how a gallery is rebuilt without any gallery-model forward pass (a query-model upgrade, adding or
        dropping one gallery model): a transformation ψ names its source space, the store holds that space's
        embeddings.  Raises ``FileNotFoundError`` naming what to embed when they are not there.
        """
        found = []
        for manifest_path in sorted(self.root.glob(f"*-{output}/{dataset.fingerprint()}/manifest.json")):
            manifest = read_manifest(manifest_path.parent, kind="embedding-set")
            if manifest["space"]["fingerprint"] == space_fingerprint:
                found.append((manifest_path.parent, manifest))
        if not found:
            raise FileNotFoundError(
                f"the store {self.root} holds no {output} set of {dataset.name} ({len(dataset)} images) in space "
                f"{space_fingerprint}: embed it first with that model (asymret embed --model ...)"
            )
        if len({m["encoder"]["fingerprint"] for _, m in found}) > 1:
            # a compatibility-trained query model lives in its gallery model's space too: the model that *defines*
            # the space (its own fingerprint) is the one a ψ was fitted on
            owners = [entry for entry in found if entry[1]["encoder"]["fingerprint"] == space_fingerprint]
            if len(owners) != 1:
                names = ", ".join(sorted({m["encoder"]["name"] for _, m in found}))
                raise ValueError(f"several models ({names}) share space {space_fingerprint} in {self.root}: name the model")
            found = owners
        return self.load(found[0][0], dataset)

    @staticmethod
    def load(directory: str | os.PathLike, dataset: ImageDataset | None = None, change_detection: str = "stat") -> Embeddings:
        """Read a finished embedding set, every shard checked against its checksum; with ``dataset``, check it is that
        dataset's, that its images have not changed since (:class:`StaleEmbeddingsError` naming one that has) and
        attach labels."""
        return EmbeddingStore._read(Path(directory), dataset, check_change_detection(change_detection))[0]

    @staticmethod
    def _read(directory: Path, dataset: ImageDataset | None, change_detection: str) -> tuple[Embeddings, bool]:
        """The embeddings, and whether some shard holds no stamps (a folder from before them: read as it is)."""
        manifest = read_manifest(directory, kind="embedding-set")
        if dataset is not None and manifest["dataset"]["fingerprint"] != dataset.fingerprint():
            raise ValueError(f"{directory} holds embeddings of another dataset ({manifest['dataset']['name']})")
        checksums = manifest.get("shard_sha256") or [None] * manifest["num_shards"]
        vectors, ids, recorded = [], [], []
        for shard in range(manifest["num_shards"]):
            meta = read_marker(directory / f"shard_{shard:05d}.json")
            vectors.append(read_shard(directory / f"shard_{shard:05d}.npy", checksums[shard]))
            ids += meta["ids"]
            recorded.append((meta.get("stamps"), meta["ids"] + meta["failed"]))
        matrix = np.concatenate(vectors) if vectors else np.zeros((0, manifest["dim"]), np.float32)
        if len(matrix) != manifest["count"] or len(ids) != manifest["count"]:
            raise ValueError(f"{directory}: shards hold {len(matrix)} vectors, manifest says {manifest['count']} (corrupt store)")
        labels, unstamped = None, False
        if dataset is not None:
            now = current_stamps(dataset, np.arange(len(dataset)), change_detection)
            if now is not None:
                unstamped = any(stamps is None for stamps, _ in recorded)
                differ = [item for stamps, held in recorded for item in (changed(stamps, now, held, change_detection) or [])]
                if differ:
                    key = dataset.keys[dataset.ids.tolist().index(differ[0])]
                    raise StaleEmbeddingsError(
                        f"{len(differ)} images of {dataset.name} changed since they were embedded in {directory} (e.g. "
                        f"{differ[0]!r}: {key}): embed them again (asymret embed, or the store's get/extract with the model)")
            row_of = {item: row for row, item in enumerate(dataset.ids.tolist())}
            labels = dataset.labels[[row_of[item] for item in ids]]
        return Embeddings(matrix, np.array(ids), Space.from_dict(manifest["space"]), labels), unstamped
