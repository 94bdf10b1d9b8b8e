"""``aiflow serve-pair``: the v2 protocol on both engines, the device client, the link, and faults.

The conformance tests run the same device client (tritonclient) against the embedded engine and
against a real Triton Inference Server (from the nvidia-pytriton wheel) serving the same export.
A tiny CNN keeps the pair cheap; the zoo models' figures are the benchmark's.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from aiflow_cli.cli.main import app

TINY = "py:fixtures.tiny_models:tiny_resnet"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny():
    from aiflow_cli.models import load_model

    return load_model(TINY)


@pytest.fixture(scope="module")
def export(tiny, tmp_path_factory):
    """int8 + zstd on the wire: the codec's bytes, framed, cross the link."""
    from aiflow_cli.export.api import export_split
    from aiflow_cli.split.codec_eval import evaluate_codec

    out = tmp_path_factory.mktemp("serve") / "pair"
    cut = tiny.cuts[0]
    (cc,) = evaluate_codec(tiny, "int8-channel+zstd", cut_indices=[0])
    export_split(tiny, [cut], {cut: cc.codec}, out, verify_count=4, exporter="torchscript")
    return out


@pytest.fixture(scope="module", params=["embedded", "triton"])
def server(request, export):
    from aiflow_cli.serve.launch import ServerProcess

    proc = ServerProcess(export, _free_port(), engine=request.param)
    try:
        proc.wait_ready(timeout_s=180)
        yield request.param, proc
    finally:
        proc.stop()


def _inputs(n: int) -> list[np.ndarray]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(1, 3, 16, 16, generator=g).numpy() for _ in range(n)]


def _device(export: Path):
    from aiflow_cli.serve.device.pairs import load_device_pairs

    _, pairs = load_device_pairs(export)
    return next(iter(pairs.values()))


# -- conformance: both engines, one client ------------------------------------------------------

def test_both_engines_speak_v2_health_and_metadata(server):
    import tritonclient.http as httpclient

    engine, proc = server
    client = httpclient.InferenceServerClient(proc.url)
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    name = "tiny_resnet-server-" + _device_cut()
    meta = client.get_model_metadata(name)
    assert meta["name"] == name and meta["inputs"][0]["datatype"] == "UINT8"
    assert meta["outputs"][0]["name"] == "output" and client.is_model_ready(name)


def _device_cut() -> str:
    from aiflow_cli.models import load_model

    return load_model(TINY).cuts[0]


def test_both_engines_answer_what_the_unsplit_model_answers(server, export, tiny):
    from aiflow_cli.serve.device.client import V2Client

    _, proc = server
    pair = _device(export)
    client = V2Client(proc.url)
    got, expected = [], []
    for i, x in enumerate(_inputs(12)):
        record = pair.request(client, x, i)
        assert record.status == "ok", record.error
        assert record.request_bytes > record.codec_bytes > 0  # framing and the v2 header, reported apart
        got.append(record.prediction)
        with torch.no_grad():
            expected.append(int(tiny.whole(torch.from_numpy(x)).argmax()))
    client.close()
    assert got == expected


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://{url}", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _binary_request(name: str, payload: bytes, datatype: str = "UINT8", declared: int | None = None) -> tuple[bytes, dict]:
    count = len(payload) // (4 if datatype == "FP32" else 1)
    head = json.dumps({"inputs": [{"name": name, "shape": [count], "datatype": datatype,
                                   "parameters": {"binary_data_size": declared if declared is not None else len(payload)}}]}
                      ).encode()
    return head + payload, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


@pytest.mark.parametrize("case, status", [
    ("wrong tensor name", 400), ("wrong dtype", 400), ("truncated binary data", 400), ("not a frame", 400),
    ("a batch over --max-batch", 400), ("unknown model", 404),
])
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(server, export, case, status):
    import tritonclient.http as httpclient

    _, proc = server
    pair = _device(export)
    framed, *_ = pair.encode(_inputs(1)[0])
    wire = framed[pair.pair.crossing[0].name].tobytes()
    model = pair.model
    if case == "wrong tensor name":
        body, headers = _binary_request("nope", wire)
    elif case == "wrong dtype":
        body, headers = _binary_request(pair.pair.crossing[0].name, wire[: len(wire) // 4 * 4], "FP32")
    elif case == "truncated binary data":
        body, headers = _binary_request(pair.pair.crossing[0].name, wire[:-10], declared=len(wire))
    elif case == "not a frame":
        body, headers = _binary_request(pair.pair.crossing[0].name, b"\x00" * 64)
    elif case == "a batch over --max-batch":  # 17 inputs in one request; the server takes 16 (both engines)
        big, *_ = pair.encode(np.repeat(_inputs(1)[0], 17, axis=0))
        body, headers = _binary_request(pair.pair.crossing[0].name, big[pair.pair.crossing[0].name].tobytes())
    else:
        body, headers = _binary_request(pair.pair.crossing[0].name, wire)
        model = "no-such-model"
    code, answer = _post(f"{proc.url}/v2/models/{model}/infer", body, headers)
    assert code == status, (code, answer)
    assert isinstance(answer.get("error"), str) and answer["error"]
    assert httpclient.InferenceServerClient(proc.url).is_server_ready()


# -- embedded engine only -----------------------------------------------------------------------

def test_a_body_over_the_limit_gets_413_and_the_server_keeps_serving(export):
    """The embedded engine's --max-body (Triton has limits of its own)."""
    import tritonclient.http as httpclient

    from aiflow_cli.serve.launch import ServerProcess

    proc = ServerProcess(export, _free_port(), max_body=200000)
    try:
        proc.wait_ready()
        pair = _device(export)
        body, headers = _binary_request(pair.pair.crossing[0].name, b"\x00" * 300_000)
        code, answer = _post(f"{proc.url}/v2/models/{pair.model}/infer", body, headers)
        assert code == 413 and "limit" in answer["error"]
        assert httpclient.InferenceServerClient(proc.url).is_server_ready()
    finally:
        proc.stop()


def test_a_token_file_makes_the_server_require_the_bearer_token(export, tmp_path):
    from aiflow_cli.serve.device.client import V2Client
    from aiflow_cli.serve.launch import ServerProcess

    token = tmp_path / "token"
    token.write_text("a-secret-token-of-32-characters!\n")
    proc = ServerProcess(export, _free_port(), token_file=token)
    try:
        proc.wait_ready()
        pair = _device(export)
        x = _inputs(1)[0]
        assert pair.request(V2Client(proc.url, retries=0), x, 0).error.startswith("401")
        assert pair.request(V2Client(proc.url, token="wrong-token-wrong-token"), x, 0).error.startswith("401")
        assert pair.request(V2Client(proc.url, token=token.read_text().strip()), x, 0).status == "ok"
        for path in ("/v2", "/v2/health/ready", f"/v2/models/{pair.model}/ready", "/v2/models/nope/ready"):
            with pytest.raises(urllib.error.HTTPError) as refused:  # health and metadata need the token too
                urllib.request.urlopen(f"http://{proc.url}{path}", timeout=10)
            assert refused.value.code == 401 and pair.model not in refused.value.read().decode()
    finally:
        proc.stop()


def test_binding_beyond_loopback_without_a_token_is_refused(runner, export):
    result = runner.invoke(app, ["serve-pair", "server", str(export), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--token-file" in result.stderr and "Traceback" not in result.stderr


def test_a_tampered_manifest_refuses_to_start(runner, export, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["pairs"][0]["server"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["serve-pair", "server", str(copy), "--port", str(_free_port())])
    assert result.exit_code == 2 and "hash mismatch" in result.stderr


def test_a_killed_and_restarted_server_loses_no_request_and_counts_none_twice(export):
    """200 requests; the server is killed (-9) after the 40th and restarted 5 s later: with the
    default retry window every request ends as ok or retried (ok after retries), exactly once."""
    from aiflow_cli.serve.device.client import V2Client
    from aiflow_cli.serve.launch import ServerProcess

    port = _free_port()
    proc = ServerProcess(export, port)
    proc.wait_ready()
    pair = _device(export)
    client = V2Client(proc.url)  # the default window (10 s) outlasts the restart
    inputs = _inputs(8)
    records, restarted = [], threading.Event()

    def restart() -> None:
        nonlocal proc
        proc.proc.kill()
        proc.proc.wait(5)
        time.sleep(5)
        proc = ServerProcess(export, port)
        restarted.set()

    try:
        for i in range(200):
            if i == 40:
                threading.Thread(target=restart, daemon=True).start()
            records.append(pair.request(client, inputs[i % 8], i))
        assert restarted.wait(30)
    finally:
        proc.stop()
    assert len(records) == 200 and len({r.request_id for r in records}) == 200
    counts = {s: sum(r.status == s for r in records) for s in ("ok", "retried", "failed")}
    assert counts["failed"] == 0 and counts["retried"] >= 1 and sum(counts.values()) == 200, counts
    assert all(r.prediction is not None for r in records if r.status in ("ok", "retried"))


def test_the_device_against_a_dead_server_reports_why_and_exits_non_zero(runner, export, monkeypatch):
    import aiflow_cli.serve.device.pairs as pairs

    monkeypatch.setattr(pairs, "bench_inputs", lambda count, data=None: (_inputs(count), [None] * count, "random"))
    result = runner.invoke(app, ["serve-pair", "device", str(export), "--server", f"127.0.0.1:{_free_port()}",
                                 "--count", "3", "--retry-seconds", "0.3"])
    assert result.exit_code == 4, result.output
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert "3 of 3 requests failed" in last and "Traceback" not in result.stderr


# -- the link ----------------------------------------------------------------------------------

def test_the_link_charges_bytes_over_rate_plus_the_delay_each_way():
    """A 50 KB message over 0.5 MB/s with 10 ms each way arrives after ~100 + 10 ms and its echo
    back after ~220 ms: the proxy's timing, checked against a plain TCP echo server."""
    from aiflow_cli.serve.link.proxy import LinkShape, start_link_thread

    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen(1)

    def serve_echo() -> None:
        conn, _ = echo.accept()
        with conn:
            got = b""
            while len(got) < 50_000:
                got += conn.recv(65536)
            conn.sendall(got)

    threading.Thread(target=serve_echo, daemon=True).start()
    shape = LinkShape(0.5e6, 10.0)
    proxy, _ = start_link_thread(echo.getsockname(), shape, LinkShape(0.5e6, 10.0))
    try:
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            t0 = time.perf_counter()
            s.sendall(b"x" * 50_000)
            got = b""
            while len(got) < 50_000:
                got += s.recv(65536)
            elapsed = (time.perf_counter() - t0) * 1e3
    finally:
        proxy.stop()
        echo.close()
    assert 200 <= elapsed <= 290, elapsed  # 2 x (100 ms serialisation + 10 ms delay)
    assert proxy.bytes_up == proxy.bytes_down == 50_000


def test_a_rate_trace_is_read_with_units_and_refused_with_the_line_named(tmp_path):
    from aiflow_cli.errors import ConfigError
    from aiflow_cli.serve.link.proxy import LinkShape, read_trace

    good = tmp_path / "trace.csv"
    good.write_text("seconds,rate\n0,2MB/s\n5,0.25MB/s\n10,2000000\n")
    trace = read_trace(good)
    shape = LinkShape(1e6, 0, trace)
    assert [shape.rate_at(t) for t in (1, 6, 11)] == [2e6, 0.25e6, 2e6]
    bad = tmp_path / "bad.csv"
    bad.write_text("0,2MB/s\n3,fast\n")
    with pytest.raises(ConfigError, match="line 2"):
        read_trace(bad)


# -- generated requests: whatever arrives, a 2xx or a 4xx, bounded memory, and the server goes on -----

def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _zstd_zeros(nbytes: int) -> bytes:
    import zstandard

    compressor, chunk = zstandard.ZstdCompressor(level=1).compressobj(), bytes(2**20)
    return b"".join([compressor.compress(chunk) for _ in range(nbytes // len(chunk))] + [compressor.flush()])


@pytest.fixture(scope="module")
def embedded(export):
    from aiflow_cli.serve.launch import ServerProcess

    proc = ServerProcess(export, _free_port())
    proc.wait_ready()
    yield proc
    proc.stop()


def _requests():
    from hypothesis import strategies as st

    from aiflow_cli.codecs.base import EncodedTensor
    from aiflow_cli.serve.wire import frame

    leaves = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=6)
    anything = st.recursive(leaves, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c,
                                                                                          max_size=4), max_leaves=24)
    datatypes = st.sampled_from(["UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BOOL", "BYTES", 7, None])
    shapes = st.lists(st.sampled_from([0, 1, 2, 3, 16, 512, 2**31 - 1, 2**40, -1]), max_size=5)
    bombs = [_zstd_zeros(n) for n in (2**20, 64 * 2**20, 256 * 2**20)]

    @st.composite
    def request(draw):  # noqa: ANN001, ANN202
        kind = draw(st.sampled_from(["json", "v2", "frame", "zstd"]))
        if kind == "json":
            return json.dumps(draw(anything)).encode(), {}
        if kind == "v2":
            item = {"name": draw(st.sampled_from(["input", "x", ""])), "datatype": draw(datatypes),
                    "shape": draw(shapes), "data": draw(anything)}
            return json.dumps({"inputs": [item], "parameters": draw(anything)}).encode(), {}
        shape = tuple(draw(st.lists(st.sampled_from([1, 2, 8, 16, 80, 512, 4096, 2**31]), min_size=1, max_size=4)))
        data = draw(st.sampled_from(bombs)) if kind == "zstd" else draw(st.binary(max_size=256))
        wire = frame(EncodedTensor(data, shape, draw(st.sampled_from(["float32", "int8", "uint8", "int32"]))))
        head = json.dumps({"inputs": [{"name": draw(st.sampled_from(["input", "h"])), "datatype": "UINT8",
                                       "shape": [len(wire)], "parameters": {"binary_data_size": len(wire)}}]}).encode()
        declared = draw(st.sampled_from([len(head), len(head), 0, len(head) + len(wire) + 1, 2**63]))
        return head + wire, {"Inference-Header-Content-Length": str(declared)}

    return request()


def test_generated_requests_get_a_2xx_or_4xx_in_bounded_memory_and_the_server_keeps_serving(embedded, export):
    """Property: v2 JSON, nested values, binary frames with any shape and zstd bombs, sent to a running
    server: every answer is a 2xx or a 4xx, its memory grows by less than 256 MB, and a good request
    is served afterwards."""
    from hypothesis import HealthCheck, given, settings

    from aiflow_cli.serve.device.client import V2Client

    pair = _device(export)
    url = f"{embedded.url}/v2/models/{pair.model}/infer"
    rss_before = _rss_bytes(embedded.proc.pid)
    codes: list[int] = []

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_requests())
    def post(req) -> None:  # noqa: ANN001
        body, headers = req
        code, _ = _post(url, body, {"Content-Type": "application/octet-stream", **headers})
        codes.append(code)
        assert 200 <= code < 300 or 400 <= code < 500, code

    post()
    assert len(codes) == 150 and any(400 <= c < 500 for c in codes)
    assert _rss_bytes(embedded.proc.pid) - rss_before < 256 * 2**20
    assert pair.request(V2Client(embedded.url), _inputs(1)[0], 0).status == "ok"


def test_closed_half_requests_are_logged_in_one_line_each_not_as_tracebacks(export):
    from aiflow_cli.serve.launch import ServerProcess

    proc = ServerProcess(export, _free_port())
    proc.wait_ready()
    host, port = proc.url.split(":")
    path = f"/v2/models/{_device(export).model}/infer".encode()
    try:
        for _ in range(30):
            with socket.create_connection((host, int(port))) as s:
                s.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100)
        time.sleep(0.5)
        assert _post(f"{proc.url}/v2/models/nope/infer", b"{}", {})[0] == 404  # still serving
    finally:
        proc.stop()
    log = proc.proc.stderr.read() if proc.proc.stderr else ""
    assert "Traceback" not in log, log[-2000:]
