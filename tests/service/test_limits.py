"""The service bounded in every dimension (issue 23): caps on queries and k × queries, every bad JSON shape a 4xx,
the body counted while it streams in, an upload pixel limit (413; Pillow's own raised to the library's), decoding off the event
loop so one heavy image blocks no other, dropped uploads logged in one line, connections that must deliver a
request in time, a busy port refused before anything is announced."""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from asymret.index import load_index
from asymret.service import ServiceConfig, create_app
from asymret.service.limits import ServerLimits, bind_listener
from asymret.service.server import BackgroundServer
from asymret.service.state import png_bytes


def config_for(service_files, **overrides) -> ServiceConfig:
    base = dict(index=str(service_files.index_a), query_model=str(service_files.encoder), max_upload_bytes=20_000, max_k=50,
                max_queries=8, max_results=60)
    return ServiceConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def client(service_files):
    with TestClient(create_app(config_for(service_files))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def space(service_files):
    return load_index(service_files.index_a).space


def unit_vectors(space, n: int) -> list[list[float]]:
    vectors = np.zeros((n, space.dim), np.float32)
    vectors[np.arange(n), np.arange(n) % space.dim] = 1.0
    return vectors.tolist()


def still_answers(client, space) -> None:
    assert client.get("/healthz").status_code == 200
    good = client.post("/search", json={"embedding": unit_vectors(space, 1)[0], "fingerprint": space.fingerprint, "k": 3})
    assert good.status_code == 200, good.text


# ------------------------------------------------------------------------------------------------ item 1: caps
def test_queries_per_request_and_k_times_queries_are_capped_with_the_cap_named(client, space):
    def search(n: int, k: int):
        return client.post("/search", json={"embedding": unit_vectors(space, n), "fingerprint": space.fingerprint, "k": k})

    assert search(8, 7).status_code == 200  # 8 queries (the cap), 56 results (under 60)
    too_many = search(9, 1)
    assert too_many.status_code == 413 and "cap is 8 (--max-queries)" in too_many.json()["detail"]
    too_wide = search(3, 21)  # 63 results
    assert too_wide.status_code == 413
    assert "3 = 63 results" in too_wide.json()["detail"] and "(--max-results)" in too_wide.json()["detail"]
    assert len(search(3, 20).json()["queries"]) == 3  # 60: exactly the cap
    info = client.get("/info").json()
    assert (info["max_queries"], info["max_results"]) == (8, 60)


def test_an_image_query_obeys_max_results_too_where_it_is_below_max_k(service_files):
    # one query: k × 1 results, refused over --max-results as the same k with one JSON vector is
    with TestClient(create_app(config_for(service_files, max_results=5))) as client:
        image = png_bytes(service_files.gallery.load(0))
        over = client.post("/search", files={"image": ("q.png", image, "image/png")}, data={"k": "6"})
        assert over.status_code == 413 and "6 × 1 = 6 results" in over.json()["detail"] and "(--max-results)" in over.json()["detail"]
        served = client.post("/search", files={"image": ("q.png", image, "image/png")}, data={"k": "5"})
        assert served.status_code == 200 and len(served.json()["queries"][0]["results"]) == 5


def test_a_json_body_larger_than_max_queries_vectors_can_need_is_refused_unparsed(service_files, space):
    # 8 vectors of 16 numbers need far less than 8 × 16 × 48 bytes + 64 KiB: a bigger body is refused from its size,
    # before the interpreter spends its time parsing what the caps would refuse anyway
    with TestClient(create_app(config_for(service_files, max_upload_bytes=10 * 1024 * 1024))) as client:
        body = json.dumps({"embedding": unit_vectors(space, 1)[0], "fingerprint": space.fingerprint, "pad": " " * 80_000})
        response = client.post("/search", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 413 and "--max-queries" in response.json()["detail"]
        assert response.headers["connection"] == "close"  # the rest of an unread body is not drained
        still_answers(client, space)


# ------------------------------------------------------------------------------------------------ item 8: JSON shapes
def _deep(depth: int) -> bytes:
    return b'{"embedding": ' + b"[" * depth + b"1" + b"]" * depth + b', "fingerprint": "x"}'


@pytest.mark.parametrize("case", [
    "ids a number", "ids null", "ids too short", "ids of objects", "ids a string", "nested 9,000 deep", "nested 900 deep",
    "embedding an object", "embedding a string", "embedding ragged", "embedding empty", "embedding of nulls", "embedding a huge int",
    "k a huge int", "k a list", "reject_fraction a huge int", "reject_threshold a string", "body a list", "body a number",
    "body null", "fingerprint an object", "integer of 5,000 digits",
])
def test_every_bad_json_shape_is_a_4xx_and_the_server_keeps_answering(client, space, case):
    vector = unit_vectors(space, 1)[0]
    good = {"embedding": [vector, vector], "fingerprint": space.fingerprint}
    bodies = {
        "ids a number": {**good, "ids": 5},
        "ids null": {**good, "ids": None},
        "ids too short": {**good, "ids": ["a"]},
        "ids of objects": {**good, "ids": [{}, []]},
        "ids a string": {**good, "ids": "ab"},
        "embedding an object": {**good, "embedding": {"a": 1}},
        "embedding a string": {**good, "embedding": "1,2,3"},
        "embedding ragged": {**good, "embedding": [vector, vector[:3]]},
        "embedding empty": {**good, "embedding": []},
        "embedding of nulls": {**good, "embedding": [None] * space.dim},
        "k a list": {**good, "k": [1]},
        "reject_threshold a string": {**good, "reject_threshold": "high"},
        "body a list": [good],
        "body a number": 5,
        "body null": None,
        "fingerprint an object": {**good, "fingerprint": {"a": [1]}},
    }
    tail = b', "fingerprint": "' + space.fingerprint.encode() + b'"}'
    raw = {
        "nested 9,000 deep": b"[" * 9_000 + b"]" * 9_000,  # 18 KB: under this body limit, far past the parser's depth
        "nested 900 deep": _deep(900),
        "embedding a huge int": b'{"embedding": [' + b"9" * 400 + b"]" + tail,
        "k a huge int": b'{"k": 1' + b"0" * 400 + b', "embedding": ' + json.dumps(vector).encode() + tail,
        "reject_fraction a huge int": b'{"reject_fraction": 1' + b"0" * 400 + b', "embedding": ' + json.dumps(vector).encode() + tail,
        "integer of 5,000 digits": b'{"k": ' + b"7" * 5000 + b', "embedding": ' + json.dumps(vector).encode() + tail,
    }
    body = raw[case] if case in raw else json.dumps(bodies[case]).encode()
    response = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, (response.status_code, response.text)  # the shape, not a size, is refused
    assert response.json()["detail"]
    still_answers(client, space)


def test_a_body_nested_100000_deep_is_a_422_under_the_default_limits(service_files, space):
    with TestClient(create_app(config_for(service_files, max_upload_bytes=10 * 1024 * 1024, max_queries=256))) as client:
        response = client.post("/search", content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"})
        assert response.status_code == 422 and "nested too deep" in response.json()["detail"]
        still_answers(client, space)


def test_ids_name_the_queries_when_they_are_a_list_of_the_right_length(client, space):
    body = {"embedding": unit_vectors(space, 2), "fingerprint": space.fingerprint, "k": 2, "ids": ["first", 2]}
    assert [q["query"] for q in client.post("/search", json=body).json()["queries"]] == ["first", "2"]


@pytest.mark.parametrize("case", ["two files", "no boundary", "k as a file", "broken multipart"])
def test_bad_multipart_shapes_are_a_4xx(client, space, service_files, case):
    image = png_bytes(service_files.gallery.load(0))
    if case == "two files":
        response = client.post("/search", files=[("image", ("a.png", image, "image/png")), ("image", ("b.png", image, "image/png"))])
    elif case == "k as a file":
        response = client.post("/search", files={"image": ("a.png", image, "image/png"), "k": ("k.txt", b"3", "text/plain")})
    else:
        content_type = "multipart/form-data" if case == "no boundary" else "multipart/form-data; boundary=xyz"
        response = client.post("/search", content=b"--xyz\r\nnot a part", headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    still_answers(client, space)


# ------------------------------------------------------------------------------------------------ item 3: streaming body
def run_asgi(app, headers: list[tuple[bytes, bytes]], chunks, counter: list[int]) -> tuple[int, dict]:
    """``app`` called directly with a body arriving in ``chunks``; counter[0] = body bytes the app pulled."""
    sent: list[dict] = []

    async def receive():
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        counter[0] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/search", "raw_path": b"/search", "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


@pytest.mark.parametrize("kind", ["application/json", "multipart/form-data; boundary=xyz"])
def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(service_files, kind):
    app = create_app(config_for(service_files))
    # an upload: 20,000 bytes + 64 KiB of multipart framing; JSON: no more than 8 vectors of 16 numbers can need
    limit = 20_000 if kind == "application/json" else 20_000 + 64 * 1024
    chunk = 16 * 1024
    pulled = [0]
    opening = b"[" if kind == "application/json" else \
        b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n\r\n\x89PNG'
    chunks = iter([opening + b" " * (chunk - len(opening))] + [b" " * chunk] * 6400)  # 100 MB if read whole
    status, body = run_asgi(app, [(b"content-type", kind.encode()), (b"transfer-encoding", b"chunked")], chunks, pulled)
    assert status == 413 and "is over" in body["detail"] and f"{limit:,} bytes" in body["detail"]
    assert limit < pulled[0] <= limit + chunk  # refused at the first chunk past the limit, the rest never read


def test_a_declared_content_length_over_the_limit_is_refused_before_the_body_is_read(service_files):
    app = create_app(config_for(service_files))
    pulled = [0]
    status, body = run_asgi(app, [(b"content-type", b"application/json"), (b"content-length", b"300000000")],
                            iter([b"x" * 65536] * 10), pulled)
    assert status == 413 and "300,000,000 bytes" in body["detail"] and pulled[0] == 0


def test_a_body_refused_from_its_content_length_closes_the_connection(service_files):
    # timeouts far past the socket's: only the 413's own close can end this connection in time (kept alive, the
    # server would go on receiving and discarding the 300 MB)
    with BackgroundServer(create_app(config_for(service_files)), limits=ServerLimits(request_timeout=60, keep_alive_timeout=60)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
                        b"Content-Length: 300000000\r\n\r\n")
            answer = b""
            while chunk := raw.recv(4096):  # b"": closed by the server (a timeout would raise instead)
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()
        assert b"300,000,000 bytes" in answer and b"(--max-upload-mb" in answer  # the detail names the flag
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


def test_connections_past_max_connections_are_answered_503(service_files):
    limits = ServerLimits(max_connections=2, request_timeout=60, keep_alive_timeout=60)
    with BackgroundServer(create_app(config_for(service_files)), limits=limits) as server:
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:  # a kept-alive connection: 1 of 2
            held.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b'"ok"' not in answer:
                answer += held.recv(4096)
            busy = httpx.get(server.url + "/healthz", timeout=10)  # its own connection is the 2nd: at the limit
            assert busy.status_code == 503
        for _ in range(200):  # the held connection gone, the server answers again
            if httpx.get(server.url + "/healthz", timeout=10).status_code == 200:
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("still 503 after the held connection closed")


# ------------------------------------------------------------------------------------------------ items 2 and 9: pixels
def test_an_upload_over_the_service_pixel_limit_is_a_413_naming_the_limit(service_files):
    with TestClient(create_app(config_for(service_files, max_image_pixels=700))) as client:
        image = png_bytes(service_files.gallery.load(0))  # 28 × 28 = 784 pixels
        response = client.post("/search", files={"image": ("q.png", image, "image/png")})
        assert response.status_code == 413 and "--max-image-pixels" in response.json()["detail"]
        assert client.get("/info").json()["max_image_pixels"] == 700
    with TestClient(create_app(config_for(service_files, max_image_pixels=784))) as client:  # exactly the limit: served
        assert client.post("/search", files={"image": ("q.png", image, "image/png")}).status_code == 200


@pytest.mark.parametrize("pillow_limit", [300, 500])  # 784 pixels: past twice Pillow's limit (its error), past once (its warning)
def test_an_upload_past_pillows_own_limit_is_served_when_the_limits_allow_it(service_files, monkeypatch, pillow_limit):
    """The service's and the library's limits decide; Pillow's own (lower) one is raised to the library's."""
    from PIL import Image

    monkeypatch.setenv("ASYMRET_MAX_IMAGE_PIXELS", str(10**12))  # the library's limit raised past Pillow's
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with TestClient(create_app(config_for(service_files, max_image_pixels=10**9))) as client:
        image = png_bytes(service_files.gallery.load(0))
        response = client.post("/search", files={"image": ("q.png", image, "image/png")})
        assert response.status_code == 200, response.text
    with TestClient(create_app(config_for(service_files, max_image_pixels=700))) as client:  # the service's own: 413
        assert client.post("/search", files={"image": ("q.png", image, "image/png")}).status_code == 413


def blocking_preprocess(app, heavy_side: int):
    """The query model's preprocessing, stalled for images ``heavy_side`` px wide until ``release`` is set."""
    entered, release = threading.Event(), threading.Event()
    model = app.state.model
    real = model.preprocess

    def preprocess(images):
        if images[0].shape[1] == heavy_side:
            entered.set()
            release.wait(60)
        return real(images)

    model.preprocess = preprocess
    return entered, release, lambda: setattr(model, "preprocess", real)


def test_a_heavy_image_being_decoded_does_not_hold_up_the_other_uploads(service_files, make_live_server):
    app = create_app(config_for(service_files, heavy_image_pixels=1000))
    entered, release, restore = blocking_preprocess(app, heavy_side=40)
    server = make_live_server(app)
    heavy_png = png_bytes(np.full((40, 40, 3), 128, np.uint8))  # 1,600 pixels: the heavy lane
    heavy_answer: list[httpx.Response] = []

    def send_heavy() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            heavy_answer.append(http.post("/search", files={"image": ("heavy.png", heavy_png, "image/png")}))

    thread = threading.Thread(target=send_heavy)
    thread.start()
    try:
        assert entered.wait(30)  # the heavy image is being preprocessed, and stays so until released
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(3):  # each answered while the heavy one is still stuck
                pixels = service_files.gallery.load(i)
                light = http.post("/search", files={"image": (f"q{i}.png", png_bytes(pixels), "image/png")}, data={"k": "1"})
                assert light.status_code == 200 and light.json()["queries"][0]["results"][0]["id"] == service_files.gallery.ids[i]
        assert not heavy_answer
    finally:
        release.set()
        thread.join(60)
        restore()
    assert heavy_answer[0].status_code == 200


def test_uploads_waiting_to_be_decoded_are_bounded(service_files):
    app = create_app(config_for(service_files, heavy_image_pixels=1000, max_pending_images=1))
    entered, release, restore = blocking_preprocess(app, heavy_side=40)
    heavy_png = png_bytes(np.full((40, 40, 3), 128, np.uint8))
    try:
        first = app.state.images.submit(heavy_png, "heavy.png")
        assert entered.wait(30)
        with TestClient(app) as client:
            busy = client.post("/search", files={"image": ("q.png", png_bytes(service_files.gallery.load(0)), "image/png")})
            assert busy.status_code == 503 and "try again" in busy.json()["detail"]
    finally:
        release.set()
        restore()
    assert first.result(30).shape[0] == 1  # the stalled one finishes: one preprocessed image


# ------------------------------------------------------------------------------------------------ item 10
DROPPED = {  # headers promising 15,000 bytes, then 1,000 of them and the connection closed
    "multipart": b"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 15000\r\n\r\n--xyz\r\n"
                 b"Content-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\n\r\n\x89PNG" + bytes(1000),
    "json": b"Content-Type: application/json\r\nContent-Length: 15000\r\n\r\n{\"embedding\": [" + b"0, " * 330,
}


@pytest.mark.parametrize("kind", sorted(DROPPED))
def test_a_dropped_upload_logs_one_line_and_no_traceback(service_files, make_live_server, caplog, kind):
    server = make_live_server(create_app(config_for(service_files)))
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
                raw.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\n" + DROPPED[kind])
            for _ in range(200):  # until the server noticed (it answers other requests meanwhile)
                if any("dropped" in r.getMessage() for r in caplog.records):
                    break
                assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
                threading.Event().wait(0.05)
    finally:
        uvicorn_errors.removeHandler(caplog.handler)
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "/search" in dropped[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("sent", [b"", b"POST /search HTTP/1.1\r\nHost: x\r\n",
                                  b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n{\"em"])
def test_a_connection_that_does_not_deliver_its_request_in_time_is_closed(service_files, sent):
    app = create_app(config_for(service_files))
    with BackgroundServer(app, limits=ServerLimits(request_timeout=0.3, keep_alive_timeout=0.3)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as raw:
            raw.sendall(sent)
            assert raw.recv(4096) == b""  # closed by the server (the socket timeout would raise instead)
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as raw:  # an idle keep-alive connection too
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b'"ok"' not in answer:
                answer += raw.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200") and raw.recv(4096) == b""
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200  # a prompt client is served as before


def test_serve_on_a_busy_port_fails_with_one_line_before_announcing(service_files):
    from asymret.cli import app as cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="port is in use.*--port"):
            bind_listener("127.0.0.1", port)
        result = CliRunner().invoke(cli, ["serve", "-i", str(service_files.index_a), "-q", str(service_files.encoder), "--port", str(port)])
    assert result.exit_code == 2
    assert "serving" not in result.output and "port is in use" in result.output
    assert "Traceback" not in result.output


def test_the_results_404_names_the_flags_that_enable_it(client):
    detail = client.get("/results").json()["detail"]
    assert "--results" in detail and "--worst-queries" in detail and "--queries " not in detail
