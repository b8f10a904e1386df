"""asymret serve: image and embedding search equal the index's own answers, rejection dropped or marked, bad input
answered with a 4xx (the server keeps answering), admin behind a token, hot swap without a dropped or mixed request."""
from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from asymret.core.space import Embeddings
from asymret.encoders import load_encoder
from asymret.index import load_index
from asymret.service import ServiceConfig, create_app
from asymret.service.state import png_bytes


@pytest.fixture(scope="module")
def client(service_files):
    config = ServiceConfig(index=str(service_files.index_a), query_model=str(service_files.encoder), gallery=service_files.gallery,
                           admin_token="secret", max_upload_bytes=20_000, max_k=50)
    with TestClient(create_app(config)) as test_client:
        yield test_client


def expected_search(service_files, vectors, k, **rejection):
    index = load_index(service_files.index_a)
    return index.search(Embeddings(vectors, np.arange(len(vectors)).astype(str), index.space), k=k, **rejection), index


def test_an_uploaded_image_is_embedded_server_side_and_answers_as_the_index_does(client, service_files):
    pixels = service_files.gallery.load(3)
    response = client.post("/search", files={"image": ("q.png", png_bytes(pixels), "image/png")}, data={"k": "5"})
    assert response.status_code == 200, response.text
    body = response.json()
    encoder = load_encoder(service_files.encoder)
    expected, index = expected_search(service_files, encoder.embed_images([pixels]), k=5)
    hits = body["queries"][0]["results"]
    assert [hit["id"] for hit in hits] == expected.ids[0].tolist()
    assert hits[0]["id"] == service_files.gallery.ids[3] and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose([hit["score"] for hit in hits], expected.scores[0], atol=1e-5)
    np.testing.assert_allclose([hit["uncertainty"] for hit in hits], index.uncertainty[expected.positions[0]], atol=1e-5)
    assert body["space"] == index.space.fingerprint and body["index_version"] == 1
    assert all(hit["thumbnail"] == f"/gallery/{hit['id']}" for hit in hits)


def test_embedding_queries_rejection_dropped_or_marked(client, service_files):
    index = load_index(service_files.index_a)
    vectors = load_encoder(service_files.encoder).embed_images([service_files.gallery.load(i) for i in (0, 5)])
    payload = {"embedding": vectors.tolist(), "fingerprint": index.space.fingerprint, "k": 8}
    dropped = client.post("/search", json={**payload, "reject_fraction": 0.5}).json()
    expected, _ = expected_search(service_files, vectors, k=8, reject_fraction=0.5)
    rejected = index.rejected_mask(reject_fraction=0.5)
    assert dropped["n_rejected"] == int(rejected.sum()) == len(index) // 2
    for answer, ids in zip(dropped["queries"], expected.ids):
        assert [hit["id"] for hit in answer["results"]] == [i for i in ids.tolist() if i]
        assert not any(hit["rejected"] for hit in answer["results"])
    marked = client.post("/search", json={**payload, "reject_fraction": 0.5, "mark_rejected": True}).json()
    plain, _ = expected_search(service_files, vectors, k=8)
    rejected_ids = set(index.ids[rejected].tolist())
    for answer, ids in zip(marked["queries"], plain.ids):
        assert [hit["id"] for hit in answer["results"]] == ids.tolist()  # nothing dropped ...
        assert [hit["rejected"] for hit in answer["results"]] == [i in rejected_ids for i in ids.tolist()]  # ... but marked
    assert any(hit["rejected"] for answer in marked["queries"] for hit in answer["results"])


@pytest.mark.parametrize("case, status, message", [
    ("not an image", 422, "not an image format"),
    ("decompression bomb", 413, "decompression bomb"),
    ("oversized upload", 413, "over the limit"),
    ("no image field", 422, "'image' file field"),
    ("wrong dimension", 422, "dimension 15"),
    ("foreign space", 422, "foreign space"),
    ("NaN", 422, "NaN or inf"),
    ("inf", 422, "NaN or inf"),
    ("not unit length", 422, "not unit length"),
    ("k zero", 422, "k must be between 1 and 50"),
    ("k too large", 422, "k must be between 1 and 50"),
    ("k not an integer", 422, "k must be a number"),
    ("reject_fraction out of range", 422, "reject_fraction"),
    ("not JSON", 422, "not valid JSON"),
    ("plain text body", 415, "multipart/form-data"),
])
def test_bad_input_gets_one_clear_4xx_and_the_server_keeps_answering(client, service_files, monkeypatch, case, status, message):
    space = load_index(service_files.index_a).space
    vector = np.zeros(space.dim, np.float32)
    vector[0] = 1.0
    good = {"embedding": vector.tolist(), "fingerprint": space.fingerprint}
    image = png_bytes(service_files.gallery.load(0))
    if case == "decompression bomb":
        monkeypatch.setenv("ASYMRET_MAX_IMAGE_PIXELS", "100")  # the 28×28 image is over it: refused from its header
    requests = {
        "not an image": lambda: client.post("/search", files={"image": ("q.png", b"GIF89a not really", "image/png")}),
        "decompression bomb": lambda: client.post("/search", files={"image": ("q.png", image, "image/png")}),
        "oversized upload": lambda: client.post("/search", files={"image": ("q.png", b"\x89PNG" + bytes(30_000), "image/png")}),
        "no image field": lambda: client.post("/search", files={"picture": ("q.png", image, "image/png")}),
        "wrong dimension": lambda: client.post("/search", json={**good, "embedding": vector[:-1].tolist()}),
        "foreign space": lambda: client.post("/search", json={**good, "fingerprint": "0123456789abcdef"}),
        "NaN": lambda: client.post("/search", content=json.dumps({**good, "embedding": [float("nan")] * space.dim}),
                                   headers={"content-type": "application/json"}),
        "inf": lambda: client.post("/search", content=json.dumps({**good, "embedding": [float("inf")] + [0.0] * (space.dim - 1)}),
                                   headers={"content-type": "application/json"}),
        "not unit length": lambda: client.post("/search", json={**good, "embedding": (2 * vector).tolist()}),
        "k zero": lambda: client.post("/search", json={**good, "k": 0}),
        "k too large": lambda: client.post("/search", json={**good, "k": 51}),
        "k not an integer": lambda: client.post("/search", files={"image": ("q.png", image, "image/png")}, data={"k": "2.5"}),
        "reject_fraction out of range": lambda: client.post("/search", json={**good, "reject_fraction": 1.5}),
        "not JSON": lambda: client.post("/search", content=b"{embedding", headers={"content-type": "application/json"}),
        "plain text body": lambda: client.post("/search", content=b"hello", headers={"content-type": "text/plain"}),
    }
    response = requests[case]()
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    monkeypatch.delenv("ASYMRET_MAX_IMAGE_PIXELS", raising=False)
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.post("/search", json={**good, "k": 3}).status_code == 200


def test_health_readiness_thumbnails_and_the_page(client, service_files):
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["index"]["items"] == len(service_files.ids_a)
    item = service_files.gallery.ids[0]
    thumbnail = client.get(f"/gallery/{item}")
    assert thumbnail.status_code == 200 and thumbnail.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/gallery/no-such-item").status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and 'id="drop"' in page.text
    assert client.get("/results").status_code == 404  # no run given


def test_admin_endpoints_need_the_token(client, service_files):
    assert client.get("/admin/status").status_code == 401
    assert client.get("/admin/status", headers={"authorization": "Bearer wrong"}).status_code == 401
    status = client.get("/admin/status", headers={"authorization": "Bearer secret"}).json()
    assert status["serving"]["path"] == str(service_files.index_a) and status["loading"] is None
    assert client.post("/admin/index", json={"path": "/no/such/index"}, headers={"authorization": "Bearer secret"}).status_code == 422
    config = ServiceConfig(index=str(service_files.index_a), query_model=str(service_files.encoder))
    with TestClient(create_app(config)) as no_token:
        assert no_token.get("/admin/status").status_code == 403


def test_a_foreign_index_is_refused_at_start_and_at_swap(service_files):
    with pytest.raises(ValueError, match="fingerprint|space"):
        create_app(ServiceConfig(index=str(service_files.foreign_index), query_model=str(service_files.encoder)))
    app = create_app(ServiceConfig(index=str(service_files.index_a), query_model=str(service_files.encoder), admin_token="t"))
    with TestClient(app) as client:
        assert client.post("/admin/index", json={"path": str(service_files.foreign_index)},
                           headers={"authorization": "Bearer t"}).status_code == 202
        app.state.slot.wait(30)
        status = client.get("/admin/status", headers={"authorization": "Bearer t"}).json()
        assert status["serving"]["version"] == 1 and "Mismatch" in status["last_error"]  # the old index stays served
        assert client.get("/readyz").status_code == 200


def test_hot_swap_drops_no_request_and_answers_each_from_one_whole_version(service_files, make_live_server, monkeypatch):
    import asymret.service.state as state

    real_load = state.load_index

    def slow_load(path, expect_space=None):  # a big index: the swap takes a while, requests keep coming
        time.sleep(0.8)
        return real_load(path, expect_space=expect_space)

    monkeypatch.setattr(state, "load_index", slow_load)
    config = ServiceConfig(index=str(service_files.index_a), query_model=str(service_files.encoder), admin_token="t")
    app = create_app(config)  # loads version 1 (slowly) before serving
    server = make_live_server(app)
    space = load_index(service_files.index_a).space
    vectors = load_encoder(service_files.encoder).embed_images([service_files.gallery.load(i) for i in range(4)])
    answers: list[tuple[int, int, list[str]]] = []  # (thread, version, ids)
    failures: list[str] = []
    stop = threading.Event()

    def hammer(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/search", json={"embedding": vectors[worker].tolist(), "fingerprint": space.fingerprint, "k": 40})
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                body = response.json()
                answers.append((worker, body["index_version"], [hit["id"] for hit in body["queries"][0]["results"]]))
                if http.get("/healthz").status_code != 200:
                    failures.append("healthz")

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        started = http.post("/admin/index", json={"path": str(service_files.index_b)}, headers={"authorization": "Bearer t"})
        assert started.status_code == 202
        assert http.post("/admin/index", json={"path": str(service_files.index_b)}, headers={"authorization": "Bearer t"}).status_code == 409
        loading = http.get("/admin/status", headers={"authorization": "Bearer t"}).json()
        assert loading["loading"] == str(service_files.index_b) and loading["serving"]["version"] == 1
        app.state.slot.wait(30)
        time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not failures
    versions = {version for _, version, _ in answers}
    assert versions == {1, 2}
    for worker in range(4):  # each client sees the old version, then the new one: never back
        seen = [version for w, version, _ in answers if w == worker]
        assert seen == sorted(seen)
    for _, version, ids in answers:  # every answer comes wholly from one version's items
        assert set(ids) <= (service_files.ids_a if version == 1 else service_files.ids_b)
        assert len(ids) == min(40, len(service_files.ids_a if version == 1 else service_files.ids_b))


def test_the_results_page_shows_the_run_and_the_worst_queries(service_files, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"setting": "CMCE ensemble", "query_model": "q", "gallery_model": "g", "num_seeds": 2,
             "metrics": {"recall@1": {"mean": 0.5, "std": 0.01, "values": [0.49, 0.51]}}}]
    (run / "results.json").write_text(json.dumps({"meta": {"command": "asymret demo"}, "rows": rows}))
    (run / "recall_at_1.png").write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    queries = service_files.everything.select(split="test", role="query")
    config = ServiceConfig(index=str(service_files.index_a), query_model=str(service_files.encoder),
                           gallery=service_files.gallery, results=str(run), queries=queries)
    with TestClient(create_app(config)) as client:
        page = client.get("/results").text
        assert "CMCE ensemble" in page and "50.0 ± 1.0" in page and "/results/files/recall_at_1.png" in page
        assert page.count("class=worst-query") == min(8, len(queries))
        assert client.get("/results/files/recall_at_1.png").status_code == 200
        assert client.get("/results/files/..%2Fsecret.png").status_code == 404
