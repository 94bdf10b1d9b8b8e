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
    ("unknown model", 404),
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
