"""``asymret serve``: the gallery index behind HTTP (FastAPI), the query model run server-side, a web page.

Endpoints (JSON unless stated):

- ``POST /search`` — multipart ``image`` (the query model embeds it) **or** a JSON body ``{"embedding": [...] or
  [[...], ...], "fingerprint": "<query space>"}``; both take ``k``, ``reject_fraction``, ``reject_threshold`` and
  ``mark_rejected`` (true: rejected gallery items stay in the list, marked, instead of being dropped).  Answers
  the top-k per query: id, score, uncertainty, rejected, and a thumbnail URL when the gallery's images are known.
- ``GET /healthz`` (alive) and ``GET /readyz`` (an index and the query model are loaded; 503 otherwise).
- ``GET /info`` — the served space, index version, limits.
- ``GET /gallery/{id}`` — a gallery item's thumbnail (PNG).
- ``GET /`` — the search page; ``GET /results`` — an evaluation run's results page (``--results``).
- ``GET /admin/status``, ``POST /admin/index {"path": ...}`` — index hot swap; ``Authorization: Bearer <token>``
  with the token from ``ASYMRET_ADMIN_TOKEN`` (admin endpoints are off without one).

Bad input is a 4xx with one ``detail`` line and never reaches the model or the index half-checked: 413 for a
body or upload over the limit (counted while it streams in), an image over the pixel limit, more query vectors or
k × queries than the caps; 415 for a body that is neither multipart nor JSON; 422 for an unreadable image, a JSON
body of the wrong shape, a wrong dimension, a foreign space, NaN/inf, k out of range.  Images are decoded and
preprocessed in bounded pools off the event loop (:mod:`.images`); connection limits are in :mod:`.limits`.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from ..core.manifest import SpaceMismatchError
from ..core.space import Embeddings
from ..data.dataset import ImageLoadError
from .images import DEFAULT_SERVICE_MAX_PIXELS, ImageRefused, ImageWorkers, preprocessed_forward
from .limits import MULTIPART_OVERHEAD, BodyLimit
from .state import GalleryImages, IndexSlot, MicroBatcher, ServedIndex, as_float_matrix, index_directory, png_bytes

log = logging.getLogger(__name__)

__all__ = ["ServiceConfig", "create_app"]

STATIC = Path(__file__).with_name("static")


@dataclass
class ServiceConfig:
    """What ``asymret serve`` serves and its limits."""

    index: str
    query_model: str
    gallery: Any = None  # an ImageDataset whose ids are the index's ids: thumbnails (and labels for /results)
    results: str | None = None  # an evaluation run's folder (results.json, *.png)
    queries: Any = None  # a labelled query ImageDataset: the results page's worst queries
    admin_token: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    max_k: int = 100
    max_queries: int = 256  # query vectors in one JSON request
    max_results: int = 10_000  # k × queries in one request: bounds the answer (~100 bytes a result)
    max_image_pixels: int = DEFAULT_SERVICE_MAX_PIXELS  # uploads; the library's limit applies too when lower
    decode_workers: int = 2  # threads decoding + preprocessing ordinary uploads
    heavy_image_pixels: int = 2_000_000  # uploads above this decode in a one-thread lane of their own
    max_pending_images: int = 64  # uploads waiting to be decoded; more are answered 503
    max_batch: int = 32
    max_wait: float = 0.002
    device: str = "auto"  # where the query model runs (auto|cpu|cuda|cuda:N); an ONNX one on that device's onnxruntime provider
    rerank: str | None = None  # a re-ranking folder (asymret.rerank.deployed): image queries' global top-S re-ranked


class BadRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def create_app(config: ServiceConfig):
    """The FastAPI application (the query model and the index are loaded here, before it answers)."""
    from ..core.device import resolve_device
    from ..encoders.onnx import load_query_model

    device = resolve_device(config.device)  # a device that is not there: refused before anything loads
    model = load_query_model(config.query_model, config.device)  # an ONNX one: its provider chosen (or refused) here
    if hasattr(model, "to"):  # a torch encoder: it stays on the device while the service runs (micro-batches go there)
        model.to(device)
    space = model.space()
    slot = IndexSlot(space)
    slot.load_now(config.index)
    # decoding and preprocessing in bounded pools, only the forward pass micro-batched (see .images)
    workers = ImageWorkers(lambda: model.preprocess, config.max_image_pixels, config.decode_workers, config.heavy_image_pixels,
                           config.max_pending_images)
    reranking = _load_reranking(config, model)
    batcher = MicroBatcher(preprocessed_forward(model, reranking.local_rows if reranking else None), config.max_batch, config.max_wait)
    gallery = GalleryImages(config.gallery) if config.gallery is not None else None
    results_page = ResultsPage(config, model, slot, gallery) if config.results or config.queries is not None else None

    app = FastAPI(title="asymret search", docs_url="/docs", redoc_url=None)
    app.state.slot, app.state.batcher, app.state.model, app.state.images = slot, batcher, model, workers
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes + MULTIPART_OVERHEAD,
                       setting="--max-upload-mb, and 64 KiB of multipart framing")

    @app.exception_handler(BadRequest)
    async def _bad_request(_request: Request, error: BadRequest):
        # a 413 may leave a body unread: close the connection rather than let uvicorn drain the rest of it
        headers = {"connection": "close"} if error.status == 413 else None
        return JSONResponse({"detail": error.detail}, status_code=error.status, headers=headers)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        current = slot.current
        if current is None:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return {"status": "ready", "index": current.describe()}

    @app.get("/info")
    def info() -> dict[str, Any]:
        current = slot.current
        return {"query_model": model.name, "space": space.to_dict(), "index": current.describe() if current else None,
                "max_k": config.max_k, "max_upload_bytes": config.max_upload_bytes, "max_queries": config.max_queries,
                "max_results": config.max_results, "max_image_pixels": workers.limit(), "thumbnails": gallery is not None,
                "results_page": results_page is not None, "rerank": reranking.describe() if reranking else None}

    @app.post("/search")
    async def search(request: Request):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        _check_length(request, config.max_upload_bytes)
        if kind == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=16)
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise BadRequest(422, "multipart body needs an 'image' file field")
            data = await upload.read(config.max_upload_bytes + 1)
            if len(data) > config.max_upload_bytes:
                raise BadRequest(413, f"upload is over the limit of {config.max_upload_bytes:,} bytes (--max-upload-mb)")
            options = _options(dict(form), config.max_k)
            _check_caps(None, options["k"], config)  # one query: k alone may pass --max-results when it is under --max-k
            name = upload.filename or "upload"
            try:  # the header is checked here; decoding and preprocessing run in the bounded pools
                prepared = await asyncio.wrap_future(workers.submit(data, name))
            except ImageRefused as error:
                raise BadRequest(error.status, error.detail) from None
            vector, local = await asyncio.wrap_future(batcher.submit(prepared))
            served = slot.current  # one snapshot for the whole request
            return await run_in_threadpool(_answer, served, np.asarray(vector, np.float32)[None], [name], options, local)
        if kind == "application/json":
            body = await _read_json_body(request, _json_limit(config, slot.current.index.space.dim))
            return await run_in_threadpool(_search_embedding, body)  # parsing JSON is no work for the event loop
        raise BadRequest(415, "send multipart/form-data with an 'image' file, or application/json with 'embedding' and 'fingerprint'")

    def _search_embedding(body: bytes) -> dict[str, Any]:
        payload = _json_object(body)
        options = _options(payload, config.max_k)
        served = slot.current
        if "embedding" not in payload or "fingerprint" not in payload:
            raise BadRequest(422, "JSON body needs 'embedding' and 'fingerprint' (the query space the embedding comes from)")
        if payload["fingerprint"] != served.index.space.fingerprint:
            raise BadRequest(422, f"foreign space: the embedding comes from space {str(payload['fingerprint'])[:64]!r}, "
                                  f"this index serves space {served.index.space.fingerprint} ({served.index.space.name})")
        _check_caps(payload["embedding"], options["k"], config)  # before the vectors are converted
        try:
            vectors = as_float_matrix(payload["embedding"])
        except ValueError as error:
            raise BadRequest(422, str(error)) from None
        return _answer(served, vectors, _query_names(payload, len(vectors)), options)

    def _answer(served: ServedIndex, vectors: np.ndarray, names: list[str], options: dict[str, Any],
                local: np.ndarray | None = None) -> dict[str, Any]:
        """The top-k; an image query (``local``: its local-descriptor row) re-ranked when the service re-ranks —
        an embedding query has no local descriptors and is answered by the global search alone."""
        index = served.index
        try:
            queries = Embeddings(vectors, np.asarray(names, dtype=str), index.space)
            if reranking is not None and local is not None:
                index = reranking.over(index, queries, np.asarray(local, np.float32)[None])
            rejection = {"reject_fraction": options["reject_fraction"], "reject_threshold": options["reject_threshold"]}
            if options["mark_rejected"]:
                result = index.search(queries, k=options["k"])
                rejected = index.rejected_mask(**rejection)
            else:
                result = index.search(queries, k=options["k"], **rejection)
                rejected = None
        except (SpaceMismatchError, ValueError) as error:
            raise BadRequest(422, str(error)) from None
        answers = []
        for name, ids, scores, positions in zip(names, result.ids, result.scores, result.positions):
            hits = []
            for item, score, position in zip(ids.tolist(), scores.tolist(), positions.tolist()):
                if position < 0:
                    continue
                hit = {"id": item, "score": round(float(score), 6), "uncertainty": round(float(index.uncertainty[position]), 6),
                       "rejected": bool(rejected[position]) if rejected is not None else False}
                if gallery is not None and item in gallery:
                    hit["thumbnail"] = f"/gallery/{item}"
                hits.append(hit)
            answers.append({"query": name, "results": hits})
        return {"index_version": served.version, "space": index.space.fingerprint, "k": options["k"],
                "reranked": reranking is not None and local is not None,
                "n_rejected": int(rejected.sum()) if rejected is not None else int(result.n_rejected), "queries": answers}

    @app.get("/gallery/{item:path}")
    def thumbnail(item: str):
        if gallery is None or item not in gallery:
            raise BadRequest(404, f"no image for gallery item {item[:200]!r}")
        try:
            png = gallery.thumbnail(item)
        except ImageLoadError as error:
            raise BadRequest(404, str(error)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/", response_class=HTMLResponse)
    def page():
        return FileResponse(STATIC / "search.html", media_type="text/html")

    @app.get("/results", response_class=HTMLResponse)
    def results():
        if results_page is None:
            raise BadRequest(404, "no results page: start the service with --results RUN_DIR (and --dataset with --worst-queries N "
                                  "for the worst queries)")
        return HTMLResponse(results_page.render())

    @app.get("/results/files/{name}")
    def results_file(name: str):
        if results_page is None or config.results is None:
            raise BadRequest(404, "no results folder")
        path = Path(config.results) / name
        if "/" in name or name.startswith(".") or path.suffix not in (".png", ".json", ".md") or not path.is_file():
            raise BadRequest(404, f"no results file {name[:200]!r}")
        return FileResponse(path)

    def _admin(request: Request) -> None:
        if not config.admin_token:
            raise BadRequest(403, "admin endpoints are off: start the service with ASYMRET_ADMIN_TOKEN set")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {config.admin_token}".encode()):
            raise BadRequest(401, "admin endpoints need 'Authorization: Bearer <token>'")

    @app.get("/admin/status")
    def admin_status(request: Request) -> dict[str, Any]:
        _admin(request)
        return slot.status()

    @app.post("/admin/index", status_code=202)
    async def admin_index(request: Request):
        _admin(request)
        try:
            payload = json.loads(await request.body())
            directory = index_directory(payload["path"])
        except (ValueError, KeyError, TypeError):
            raise BadRequest(422, "body must be JSON {\"path\": \"<index folder>\"}") from None
        except FileNotFoundError as error:
            raise BadRequest(422, str(error)) from None
        if not slot.swap(directory):
            raise BadRequest(409, f"an index is already loading ({slot.status()['loading']})")
        return {"loading": str(directory), "serving": slot.current.describe()}

    return app


def _load_reranking(config: ServiceConfig, model: Any):
    """The re-ranking folder of ``config`` (None without one), checked to belong to ``model``: its query space and
    preprocessing (the local layer is fed the query model's preprocessed pixels)."""
    if config.rerank is None:
        return None
    from ..rerank.deployed import DeployedReranking

    reranking = DeployedReranking(config.rerank, config.device)
    reranking.query_space.check_compatible(model.space(), "the query model")
    if reranking.query_local.preprocess.config() != model.preprocess.config():
        raise ValueError(f"{config.rerank}: its query-side local layer expects other preprocessing than the query model's")
    return reranking


#: bytes a JSON number may take with its separator and some indentation ("-1.2345678901234567e-05, " is 25)
JSON_BYTES_PER_NUMBER = 48


def _json_limit(config: ServiceConfig, dim: int) -> int:
    """The largest JSON body worth parsing: ``max_queries`` vectors of ``dim`` numbers (and 64 KiB for the rest).
    Parsing holds the interpreter, so a body that could only be refused by the caps is refused by its size."""
    return min(config.max_upload_bytes, config.max_queries * dim * JSON_BYTES_PER_NUMBER + 64 * 1024)


async def _read_json_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) from its Content-Length or as soon as it streams past ``limit``."""
    why = f"the limit of {limit:,} bytes for a JSON body (at most --max-queries vectors of this index's dimension)"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"JSON body of {int(declared):,} bytes is over {why}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"JSON body is over {why}")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 422 naming what is wrong (invalid, nested too deep, not an object)."""
    try:
        payload = json.loads(body)
    except RecursionError:  # the parser recurses per nesting level: 100,000 '[' are a client's doing, not a 500
        raise BadRequest(422, "body is not valid JSON: nested too deep") from None
    except ValueError as error:
        raise BadRequest(422, f"body is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(payload, dict):
        raise BadRequest(422, "JSON body must be an object with 'embedding' and 'fingerprint'")
    return payload


def _check_caps(embedding: Any, k: int, config: ServiceConfig) -> None:
    """At most ``max_queries`` vectors and ``max_results`` (k × queries) results: the answer stays bounded."""
    n = len(embedding) if isinstance(embedding, list) and embedding and isinstance(embedding[0], list) else 1
    if n > config.max_queries:
        raise BadRequest(413, f"{n:,} query vectors in one request: the cap is {config.max_queries:,} (--max-queries)")
    if n * k > config.max_results:
        raise BadRequest(413, f"k × queries = {k} × {n:,} = {n * k:,} results: the cap is {config.max_results:,} "
                              f"(--max-results); send fewer queries or a smaller k")


def _query_names(payload: dict[str, Any], n: int) -> list[str]:
    """The queries' names: the body's ``ids`` (a list of n strings or numbers) or, without it, 0..n-1."""
    if "ids" not in payload:
        return [str(i) for i in range(n)]
    ids = payload["ids"]
    if not isinstance(ids, list) or len(ids) != n or not all(isinstance(i, (str, int, float)) and not isinstance(i, bool) for i in ids):
        raise BadRequest(422, f"'ids' must be a list of {n} strings or numbers, one per query vector")
    return [str(i)[:200] for i in ids]


def _check_length(request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit + 64 * 1024:  # multipart framing on top of the file itself
                raise BadRequest(413, f"upload of {int(length):,} bytes is over the limit of {limit:,} bytes (--max-upload-mb)")
        except ValueError:
            raise BadRequest(400, "Content-Length is not a number") from None


def _options(fields: dict[str, Any], max_k: int) -> dict[str, Any]:
    """``k``, rejection and marking from form fields (strings) or JSON values, checked."""
    def number(name: str, cast, default):
        value = fields.get(name, default)
        if value is None or value == "":
            return default
        try:
            parsed = cast(value)
        except (TypeError, ValueError, OverflowError):
            raise BadRequest(422, f"{name} must be a number, got {str(value)[:40]!r}") from None
        if isinstance(parsed, float) and not np.isfinite(parsed):
            raise BadRequest(422, f"{name} must be finite")
        return parsed

    k = number("k", _integer, 10)
    if not 1 <= k <= max_k:
        raise BadRequest(422, f"k must be between 1 and {max_k} (--max-k), got {k}")
    fraction = number("reject_fraction", float, None)
    if fraction is not None and not 0.0 <= fraction < 1.0:
        raise BadRequest(422, f"reject_fraction must be in [0, 1), got {fraction}")
    mark = fields.get("mark_rejected", False)
    return {"k": k, "reject_fraction": fraction, "reject_threshold": number("reject_threshold", float, None),
            "mark_rejected": mark is True or str(mark).lower() in ("1", "true", "yes", "on")}


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


class ResultsPage:
    """An evaluation run's results as a page: its table (results.json), its plots, and — given labelled queries —
    the queries whose first correct gallery item ranks lowest, with their top-k."""

    def __init__(self, config: ServiceConfig, model, slot: IndexSlot, gallery: GalleryImages | None, worst: int = 8, k: int = 8) -> None:
        self.config, self.model, self.slot, self.gallery, self.worst, self.k = config, model, slot, gallery, worst, k
        self._worst_html: str | None = None

    def render(self) -> str:
        parts = [_HEAD.format(title="asymret — results")]
        if self.config.results:
            parts.append(self._table())
        if self.config.queries is not None and self.gallery is not None:
            if self._worst_html is None:
                self._worst_html = self._worst_queries()
            parts.append(self._worst_html)
        parts.append("</body></html>")
        return "\n".join(parts)

    def _table(self) -> str:
        folder = Path(self.config.results)
        try:
            report = json.loads((folder / "results.json").read_text())
        except (OSError, ValueError) as error:
            return f"<p class=error>cannot read {html.escape(str(folder / 'results.json'))}: {html.escape(str(error))}</p>"
        rows = report.get("rows", [])
        metrics = [m for m in ("recall@1", "map@r", "recall@2", "recall@4", "recall@8") if any(m in r.get("metrics", {}) for r in rows)]
        out = [f"<h2>Run: {html.escape(folder.name)}</h2>", f"<p class=meta>{html.escape(str(report.get('meta', {}).get('command', '')))}</p>",
               "<table id=results-table><tr><th>setting</th><th>query</th><th>gallery</th>"
               + "".join(f"<th>{html.escape(m)}</th>" for m in metrics) + "<th>seeds</th></tr>"]
        for row in rows:
            cells = []
            for m in metrics:
                value = row.get("metrics", {}).get(m)
                cells.append(f"<td>{100 * value['mean']:.1f} ± {100 * value['std']:.1f}</td>" if value else "<td></td>")
            out.append(f"<tr><td>{html.escape(str(row.get('setting', '')))}</td><td>{html.escape(str(row.get('query_model', '')))}</td>"
                       f"<td>{html.escape(str(row.get('gallery_model', '')))}</td>{''.join(cells)}<td>{row.get('num_seeds', '')}</td></tr>")
        out.append("</table>")
        for plot in sorted(folder.glob("*.png")):
            out.append(f"<figure><img class=plot src='/results/files/{html.escape(plot.name)}' alt='{html.escape(plot.stem)}'>"
                       f"<figcaption>{html.escape(plot.stem)}</figcaption></figure>")
        return "\n".join(out)

    def _worst_queries(self) -> str:
        queries, served = self.config.queries, self.slot.current
        index, labels = served.index, dict(zip(self.gallery.dataset.ids.tolist(), self.gallery.dataset.labels.tolist()))
        images = [queries.load(i) for i in range(len(queries))]
        vectors = self.model.embed_images(images)
        depth = min(len(index), 100)
        result = index.search(Embeddings(vectors, queries.ids, index.space), k=depth)
        correct = np.array([[labels.get(item) == label for item in row] for row, label in zip(result.ids.tolist(), queries.labels.tolist())])
        first = np.where(correct.any(1), correct.argmax(1), depth)  # rank of the first correct item (depth = none in the top)
        order = np.argsort(-first, kind="stable")[: self.worst]
        out = [f"<h2>Worst queries ({len(queries)} queries, index version {served.version}): the first correct item ranks lowest</h2>",
               "<div id=worst>"]
        for row in order.tolist():
            query_id = queries.ids[row]
            tiles = "".join(
                f"<figure class='{'hit' if ok else 'miss'}'><img src='/gallery/{html.escape(item)}'><figcaption>{score:.3f}</figcaption></figure>"
                for item, score, ok in zip(result.ids[row][: self.k].tolist(), result.scores[row][: self.k].tolist(), correct[row][: self.k]))
            rank = "none in the top 100" if first[row] >= depth else f"first correct at rank {first[row] + 1}"
            out.append(f"<div class=worst-query><p>{html.escape(str(query_id))} (label {int(queries.labels[row])}): {rank}</p>"
                       f"<figure class=query><img src='data:image/png;base64,{base64.b64encode(png_bytes(images[row], 96)).decode()}'><figcaption>query</figcaption></figure>{tiles}</div>")
        out.append("</div>")
        return "\n".join(out)


_HEAD = """<!doctype html><html><head><meta charset=utf-8><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}
figure{{display:inline-block;margin:4px;text-align:center;font-size:12px}} .hit img{{outline:3px solid #2a2}} .miss img{{outline:3px solid #c33}}
.plot{{max-width:520px}} .meta{{color:#666;font-family:monospace}} img{{image-rendering:pixelated}}
</style></head><body><h1><a href='/'>asymret</a> results</h1>"""
