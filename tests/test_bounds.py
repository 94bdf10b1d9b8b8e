"""Every size a peer can send is bounded before anything is allocated: decompressed bytes by the
tensor they claim to be, a framed shape by the declaration and the server's --max-batch, a request's
JSON by its depth and its element count by the body that carries it."""

from __future__ import annotations

import json
import resource
import struct

import numpy as np
import pytest

from aiflow_cli.codecs.base import ActivationCodec, EncodedTensor, bounded_unzstd
from aiflow_cli.codecs.entropy import EntropyTables
from aiflow_cli.errors import InputError
from aiflow_cli.schemas.manifest import TensorDecl
from aiflow_cli.serve.protocol import parse_infer_request
from aiflow_cli.serve.server.halves import check_frame_shape, decode_wire
from aiflow_cli.serve.wire import frame

DECL = TensorDecl(name="h", shape=["batch", 80, 14, 14], dtype="int8")


def _zstd_of_zeros(nbytes: int) -> bytes:
    """A small frame that expands to ``nbytes`` (streamed: neither side holds the zeros at once)."""
    import zstandard

    chunk, out = bytes(2**20), []
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    for _ in range(nbytes // len(chunk)):
        out.append(compressor.compress(chunk))
    out.append(compressor.flush())
    return b"".join(out)


def test_a_zstd_bomb_is_refused_after_reading_only_what_its_tensor_declares():
    bomb = _zstd_of_zeros(512 * 2**20)  # ~16 KB that expand to 512 MiB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="more than the 15680 bytes"):
        bounded_unzstd(bomb, 80 * 14 * 14)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB: far below 512 MiB
    assert len(bomb) < 64 * 1024


def test_a_zstd_frame_that_holds_exactly_its_tensor_still_decodes():
    codec = ActivationCodec(zstd_level=3)
    x = np.arange(2 * 80 * 14 * 14, dtype=np.int8).reshape(2, 80, 14, 14)
    assert np.array_equal(codec.unpack(codec.pack(x)), x)


def test_the_server_refuses_a_bomb_frame_with_a_400_not_an_allocation():
    enc = EncodedTensor(_zstd_of_zeros(64 * 2**20), (1, 80, 14, 14), "int8")
    with pytest.raises(InputError, match="do not decode"):
        decode_wire(ActivationCodec(zstd_level=3), np.frombuffer(frame(enc), np.uint8), DECL)


@pytest.mark.parametrize("shape, message", [
    ((512, 80, 14, 14), "batch 512 is over this server's limit of 16"),
    ((1, 81, 14, 14), "does not fit the declared"),
    ((1, 80, 14), "does not fit the declared"),
])
def test_a_framed_shape_is_checked_against_the_declaration_and_max_batch(shape, message):
    with pytest.raises(InputError, match=message):
        check_frame_shape(shape, DECL)


def test_max_batch_is_the_servers_to_raise():
    check_frame_shape((64, 80, 14, 14), DECL, max_batch=64)
    with pytest.raises(InputError, match="limit of 8"):
        check_frame_shape((9, 80, 14, 14), DECL, max_batch=8)


def test_a_huge_dynamic_dimension_is_refused_in_integers():
    seq = TensorDecl(name="h", shape=["batch", "sequence", 576], dtype="float32")
    with pytest.raises(InputError, match="over the limit"):
        check_frame_shape((1, 2**32 - 1, 576), seq)


def test_an_entropy_header_that_disagrees_with_its_frame_is_refused_before_allocating():
    tables = EntropyTables([0], [np.array([0.5, 0.5])])
    header = struct.pack("<4H", 65535, 65535, 65535, 65535)  # 2^64 symbols claimed in 8 bytes
    with pytest.raises(ValueError, match="the frame"):
        tables.decode(header + bytes(8), (1, 1, 1, 1))


def _body(msg: object) -> bytes:
    return json.dumps(msg).encode()


@pytest.mark.parametrize("body, message", [
    (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ' + b"[" * 5000 + b"1" + b"]" * 5000
     + b"}]}", "nests too deeply"),
    (_body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2**31 - 1] * 3, "data": [1]}]}), "can carry"),
    (_body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [[1], [2], [3]]}]}), "does not hold"),
    (_body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}]}), "does not hold"),
])
def test_a_request_header_is_bounded_in_depth_and_elements(body, message):
    with pytest.raises(InputError, match=message):
        parse_infer_request(body, None)


BILLION_LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
    + ["kind: device", "name: bomb"])


def test_a_yaml_alias_bomb_is_refused_before_anything_walks_it(runner, tmp_path):
    from aiflow_cli.cli.main import app

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    assert len(bomb.read_bytes()) < 1024
    result = runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--target", str(bomb)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "aliases expand to more than 100,000" in lines[0], result.stderr


def test_many_aliases_are_refused_even_when_each_is_small(tmp_path):
    from aiflow_cli.errors import ConfigError
    from aiflow_cli.schemas.hardware import load_hardware

    path = tmp_path / "aliases.yaml"
    path.write_text("a: &a 1\nlist: [" + ", ".join(["*a"] * 101) + "]\nkind: device\n")
    with pytest.raises(ConfigError, match="more than 100 aliases"):
        load_hardware(path)


def test_a_large_yaml_file_is_refused_by_its_size(tmp_path):
    from aiflow_cli.errors import ConfigError
    from aiflow_cli.schemas.hardware import load_hardware

    big = tmp_path / "big.yaml"
    big.write_text("kind: device\n" + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="too large"):
        load_hardware(big)


@pytest.mark.parametrize("stage, field", [
    ("{kind: distill, steps: 1e30}", "steps"),
    ("{kind: evaluate, latency_repeats: 1000000000000}", "latency_repeats"),
    ("{kind: quantize, method: static, calibration_samples: 1000000000000}", "calibration_samples"),
    ("{kind: distill, steps: 10, learning_rate: 1e308}", "learning_rate"),
    ("{kind: distill, steps: 10, temperature: 1e308}", "temperature"),
    ("{kind: quantize, method: int4, block_size: 1099511627776}", "block_size"),
    ("{kind: quantize, method: int4, block_size: 48}", "block_size"),
])
def test_every_recipe_number_has_an_upper_bound(tmp_path, stage, field):
    from aiflow_cli.errors import ConfigError
    from aiflow_cli.schemas.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(f"name: r\nstages:\n  - {stage}\n")
    with pytest.raises(ConfigError, match=field):
        load_recipe(path)


@pytest.mark.parametrize("text, loader", [
    ("schema_version: aiflow.recipe/99\nname: r\nstages:\n  - {kind: evaluate}\n", "recipe"),
    ("schema_version: aiflow.hardware/9\nkind: link\nname: l\nrate_bytes_per_s: 1\nrtt_ms: 1\nsource: s\n", "hardware"),
])
def test_an_unknown_schema_version_is_refused_naming_the_one_this_aiflow_reads(tmp_path, text, loader):
    from aiflow_cli.errors import ConfigError
    from aiflow_cli.schemas.hardware import load_hardware
    from aiflow_cli.schemas.recipe import load_recipe

    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="is not one this aiflow reads"):
        (load_recipe if loader == "recipe" else load_hardware)(path)


def test_a_file_with_the_current_schema_version_loads(tmp_path):
    from aiflow_cli.schemas.hardware import load_hardware

    path = tmp_path / "l.yaml"
    path.write_text("schema_version: aiflow.hardware/1\nkind: link\nname: l\nrate_bytes_per_s: 1\nrtt_ms: 1\nsource: s\n")
    assert load_hardware(path).name == "l"


def test_a_profile_with_a_negative_latency_is_refused(tmp_path, host_profile_file):
    from aiflow_cli.errors import ConfigError
    from aiflow_cli.schemas.profile import load_profile

    data = json.loads(host_profile_file.read_text())
    data["segments"][0]["latency_ms"]["median"] = -1.0
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="latency_ms.median"):
        load_profile(bad)


def test_a_server_profile_passed_as_the_device_is_refused(runner):
    from conftest import PROFILES

    from aiflow_cli.cli.main import app

    server = PROFILES / "servers" / "a100-edge.yaml"
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--device", str(server), "--server", str(server),
                                 "--bandwidth", "1MB/s"])
    assert result.exit_code == 2 and "is a server profile, passed as --device" in result.stderr, result.output


@pytest.mark.parametrize("args, message", [
    (["serve-pair", "link", "--to", "127.0.0.1:8000", "--listen", "70000"], "--listen must be at most 65535"),
    (["serve-pair", "link", "--to", "127.0.0.1:8000", "--listen", "-1"], "--listen must be 0 or more"),
    (["serve-pair", "link", "--to", "127.0.0.1:99999"], "port in 1-65535"),
    (["serve-pair", "server", ".", "--cores", "-1"], "--cores -1: this machine has cores"),
    (["serve-pair", "server", ".", "--port", "0"], "--port must be at least 1"),
    (["serve-pair", "server", ".", "--max-batch", "0"], "--max-batch must be at least 1"),
    (["serve-pair", "generate", ".", "--server", "127.0.0.1:1", "--prompt", "a\udcff"], "not valid UTF-8"),
    (["split", "bottleneck", "zoo:efficientnet-lite0", "--cut", "block12", "--epochs", "0"], "--epochs must be at least 1"),
])
def test_bad_options_are_refused_in_one_line_before_any_work(runner, args, message):
    from aiflow_cli.cli.main import app

    result = runner.invoke(app, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output


def test_a_port_in_use_is_refused_in_one_line(runner):
    import socket

    from aiflow_cli.cli.main import app

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["serve-pair", "link", "--to", "127.0.0.1:8000", "--listen", str(port)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], result.output


def _yaml_documents():
    from hypothesis import strategies as st

    names = st.sampled_from(["a", "b", "c", "kind", "name", "stages", "steps"])
    scalars = st.sampled_from(["1", "1e30", ".inf", ".nan", "x", "[]", "{}", "device", "~"])

    @st.composite
    def document(draw):  # noqa: ANN001, ANN202 - anchors, aliases and nesting in a few hundred bytes
        depth = draw(st.integers(1, 60))
        lines = [f"a: &a [{', '.join([draw(scalars)] * draw(st.integers(1, 12)))}]"]
        for i in range(draw(st.integers(0, 12))):
            prev, cur = ("a" if i == 0 else f"l{i - 1}"), f"l{i}"
            lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * draw(st.integers(1, 12)))}]")
        lines.append(f"{draw(names)}: " + "[" * depth + draw(scalars) + "]" * depth)
        lines.append(f"{draw(names)}: {draw(scalars)}")
        return "\n".join(lines) + "\n"

    return document()


def test_every_yaml_reader_answers_a_generated_bomb_with_a_config_error_or_a_value(tmp_path):
    """Property: aliases nested up to 12 deep (12^12 values expanded), lists nested up to 60 deep, odd
    scalars: a recipe and a hardware profile each load or refuse with one ConfigError, never hang or
    raise anything else."""
    from hypothesis import HealthCheck, given, settings

    from aiflow_cli.errors import ConfigError
    from aiflow_cli.schemas.hardware import load_hardware
    from aiflow_cli.schemas.recipe import load_recipe

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(_yaml_documents())
    def load(text: str) -> None:
        path = tmp_path / "doc.yaml"
        path.write_text(text)
        for reader in (load_recipe, load_hardware):
            try:
                reader(path)
            except ConfigError:
                pass

    load()
