"""Files and options as a trust boundary: every bad input gets exit 2 (or 3 for a pair that does not
reproduce its reference), one line on stderr, no traceback, nothing written, and nothing named in a
file is imported.

Table-driven cases for each known failure, then property-based ones (hypothesis) that generate
malformed YAML, JSON, manifests and option values and assert the same contract.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import PROFILES

from aiflow_cli.cli.main import app

TINY = "py:fixtures.tiny_models:tiny_resnet"
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def one_line(result, code: int = 2) -> str:
    """The contract: the exit code, exactly one non-blank stderr line (the first one), no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert lines and lines[0].strip(), f"stderr starts with a blank line: {result.stderr!r}"
    assert len([line for line in lines if line.strip()]) == 1, result.stderr
    assert "Traceback" not in result.stderr and len(lines[0]) < 600, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """An fp32 pair of the tiny CNN: cheap to export, verify and tamper with."""
    from aiflow_cli.codecs import make_codec
    from aiflow_cli.export.api import export_split
    from aiflow_cli.models import load_model

    model = load_model(TINY)
    out = tmp_path_factory.mktemp("tiny") / "pair"
    export_split(model, [model.cuts[0]], {model.cuts[0]: make_codec("fp32")}, out, triton=False, verify_count=4,
                 exporter="torchscript")
    return out


@pytest.fixture()
def tampered(tiny_export, tmp_path):
    """A fresh copy of the export and a function that edits its manifest."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_export, copy)

    def edit(change) -> Path:  # noqa: ANN001 - dict -> None
        data = json.loads((copy / "manifest.json").read_text())
        change(data)
        (copy / "manifest.json").write_text(json.dumps(data))
        return copy

    return copy, edit


def verify(runner, directory: Path, *extra: str):  # noqa: ANN001, ANN201
    return runner.invoke(app, ["split", "verify", str(directory), "--verify-count", "2", *extra])


def test_an_untouched_export_verifies(runner, tiny_export):
    result = verify(runner, tiny_export, "--trust-source")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "ok: 1 pair(s)" in text and "reproduce the unsplit model" in text


def _set(path: str, value):  # noqa: ANN001, ANN202 - 'pairs.0.device.inputs.0.dtype' -> setter
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def change(data: dict) -> None:
        for k in keys[:-1]:
            data = data[k]
        data[keys[-1]] = value

    return change


@pytest.mark.parametrize("field, value, message", [
    ("pairs.0.device.inputs.0.dtype", "int64", "pairs.0.device.inputs.0.dtype"),
    ("pairs.0.device.inputs.0.shape", ["batch", 3, 32, 32], "pairs.0.device.inputs.0.shape"),
    ("pairs.0.server.outputs.0.name", "scores", "pairs.0.server.outputs"),
    ("pairs.0.server.inputs.0.shape", ["n", 8, 16, 16], "pairs.0.server.inputs.0.shape"),
    ("pairs.0.crossing.0.dtype", "float16", "pairs.0.crossing.0"),
    ("pairs.0.device.size_bytes", 12, "pairs.0.device.size_bytes"),
    ("pairs.0.cut_index", 7, "pairs.0.cut_index"),
    ("pairs.0.cut", "nowhere", "pairs.0.cut"),
    ("pairs", [], "pairs"),
    ("pairs.0.device.file", "/etc/passwd", "pairs.0.device.file"),
    ("pairs.0.server.file", "../../../etc/passwd", "pairs.0.server.file"),
    ("pairs.0.directory", "/tmp", "pairs.0.directory"),
    ("pairs.0.verification.count", 0, "pairs.0.verification.count"),
    ("source_model.fingerprint", "0" * 64, "source_model.fingerprint"),
    ("schema_version", "aiflow.manifest/1", "schema_version"),
    ("opset", float("inf"), "opset"),
    ("pairs.0.verification.max_abs_diff", float("nan"), "pairs.0.verification.max_abs_diff"),
])
def test_verify_refuses_a_tampered_manifest_naming_the_field(runner, tampered, field, value, message):
    _, edit = tampered
    line = one_line(verify(runner, edit(_set(field, value)), "--trust-source"))
    assert message in line, line


def test_verify_refuses_a_file_that_escapes_through_a_symlink(runner, tampered, tmp_path):
    copy, edit = tampered
    data = json.loads((copy / "manifest.json").read_text())
    outside = tmp_path / "outside.onnx"
    shutil.copyfile(copy / data["pairs"][0]["device"]["file"], outside)
    (copy / "link.onnx").symlink_to(outside)
    line = one_line(verify(runner, edit(_set("pairs.0.device.file", "link.onnx"))))
    assert "outside the export directory" in line and "pairs.0.device.file" in line


def test_verify_refuses_garbage_onnx_even_with_its_hash_updated(runner, tampered):
    from tamper import rehash

    copy, _ = tampered
    data = json.loads((copy / "manifest.json").read_text())
    (copy / data["pairs"][0]["server"]["file"]).write_bytes(b"\x08\x07garbage" * 50)
    rehash(copy)
    line = one_line(verify(runner, copy))
    assert "not a valid ONNX model" in line and "pairs.0.server" in line


@pytest.mark.parametrize("content, message", [
    ("[1, 2, 3]" + ", 4" * 200_000, "expected a mapping at the top level, got a list"),
    (b"\xff\xfe{}", "not UTF-8"),
    ('{"schema_version": ', "malformed JSON"),
])
def test_verify_refuses_a_manifest_it_cannot_read_in_one_short_line(runner, tampered, content, message):
    copy, _ = tampered
    data = content if isinstance(content, bytes) else content.replace(", 4" * 200_000, "").replace(
        "[1, 2, 3]", "[" + ", ".join(["1"] * 200_000) + "]")
    (copy / "manifest.json").write_bytes(data if isinstance(data, bytes) else data.encode())
    line = one_line(verify(runner, copy))
    assert message in line, line


def test_a_manifest_naming_py_code_imports_nothing_without_trust_source(runner, tampered, tmp_path, monkeypatch):
    marker = tmp_path / "imported.txt"
    module = tmp_path / "aiflow_marker_module.py"
    module.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
                      "def build():\n    raise SystemExit('called')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _, edit = tampered
    directory = edit(_set("source_model.spec", "py:aiflow_marker_module:build"))
    line = one_line(verify(runner, directory))
    assert "--trust-source" in line and "would import and run Python code" in line
    assert not marker.exists() and "aiflow_marker_module" not in sys.modules


def test_verify_count_must_be_at_least_one(runner, tiny_export):
    for count in ("0", "-1"):
        result = runner.invoke(app, ["split", "verify", str(tiny_export), "--verify-count", count])
        assert "--verify-count must be at least 1" in one_line(result)


def test_export_with_verify_count_zero_writes_nothing(runner, tmp_path):
    out = tmp_path / "pair"
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--cut", "block3", "--export", str(out),
                                 "--verify-count", "0"])
    assert "--verify-count must be at least 1" in one_line(result) and not out.exists()


# -- every input file through one reader --------------------------------------------------------

def _profile_args(path: Path) -> list[str]:
    return ["profile", TINY, "--repeats", "1", "--warmup", "0", "--target", str(path)]


def _split_device_args(path: Path) -> list[str]:
    return ["split", TINY, "--device", str(path), "--server", str(PROFILES / "servers" / "a100-edge.yaml"),
            "--bandwidth", "1MB/s"]


def _split_link_args(path: Path) -> list[str]:
    return ["split", TINY, "--device", str(PROFILES / "devices" / "raspberry-pi-5.yaml"),
            "--server", str(PROFILES / "servers" / "a100-edge.yaml"), "--link", str(path)]


def _split_profile_args(path: Path) -> list[str]:
    return ["split", TINY, "--device", str(path), "--server", str(path), "--bandwidth", "1MB/s"]


def _recipe_args(path: Path) -> list[str]:
    return ["compress", TINY, "--recipe", str(path), "--out", str(path.parent / "never")]


FILE_OPTIONS = {"--target": (_profile_args, ".yaml"), "--device": (_split_device_args, ".yaml"),
                "--link": (_split_link_args, ".yaml"), "--profile JSON": (_split_profile_args, ".json"),
                "--recipe": (_recipe_args, ".yaml")}


@pytest.mark.parametrize("option", FILE_OPTIONS)
@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"kind: device\nname: \xff\xfe\x80\n"), "not UTF-8"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: None, "not found"),
    (lambda p: p.write_text('["a", "b"]\n'), "expected a mapping"),
])
def test_every_input_file_fails_in_one_line_through_the_same_reader(runner, tmp_path, option, make, message):
    args, suffix = FILE_OPTIONS[option]
    path = tmp_path / f"input{suffix}"
    make(path)
    line = one_line(runner.invoke(app, args(path)))
    assert message in line and str(path) in line, line
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("field, value", [("peak_macs_per_s", ".inf"), ("memory_bandwidth_bytes_per_s", ".nan"),
                                          ("peak_macs_per_s", "-1")])
def test_hardware_numbers_must_be_finite_and_positive(runner, tmp_path, field, value):
    text = (PROFILES / "devices" / "raspberry-pi-5.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("\n".join(f"{field}: {value}" if line.startswith(field) else line for line in text.splitlines()))
    line = one_line(runner.invoke(app, _profile_args(bad)))
    assert field in line and str(bad) in line


@pytest.mark.parametrize("rate, rtt, message", [("1e999MB/s", "20ms", "finite"), ("1MB/s", "1" * 400 + "ms", "finite"),
                                                ("infMB/s", "20ms", "cannot read link rate")])
def test_link_rates_and_rtts_must_be_finite(runner, rate, rtt, message):
    result = runner.invoke(app, ["split", TINY, "--device", str(PROFILES / "devices" / "raspberry-pi-5.yaml"),
                                 "--server", str(PROFILES / "servers" / "a100-edge.yaml"), "--bandwidth", rate,
                                 "--rtt", rtt])
    assert message in one_line(result)


def test_a_link_yaml_with_an_infinite_rate_is_refused(runner, tmp_path):
    bad = tmp_path / "link.yaml"
    bad.write_text("kind: link\nname: fast\nrate_bytes_per_s: .inf\nrtt_ms: 20\nsource: test\n")
    line = one_line(runner.invoke(app, _split_link_args(bad)))
    assert "rate_bytes_per_s" in line and "finite" in line


def test_a_recipe_naming_py_code_imports_nothing_without_trust_source(runner, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nmodel: {TINY}\nstages:\n  - kind: evaluate\n")
    line = one_line(runner.invoke(app, ["compress", "--recipe", str(recipe), "--out", str(tmp_path / "out")]))
    assert "field 'model'" in line and "--trust-source" in line
    assert not (tmp_path / "out").exists()


def test_compress_out_that_is_a_file_talks_about_out(runner, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("mine")
    line = one_line(runner.invoke(app, ["compress", "--recipe", str(RECIPES / "minilm-l6-int8-dynamic.yaml"),
                                        "--out", str(target)]))
    assert "--out" in line and "--export" not in line and target.read_text() == "mine"


def _unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # permission bits do not stop root; /proc refuses new entries for everyone
        return Path("/proc/aiflow-test")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked


@pytest.mark.parametrize("argv", [
    lambda d: ["split", "zoo:efficientnet-lite0", "--cut", "block3", "--export", str(d / "pair")],
    lambda d: ["compress", "--recipe", str(RECIPES / "minilm-l6-int8-dynamic.yaml"), "--out", str(d / "out")],
])
def test_a_read_only_parent_is_refused_before_any_work(runner, tmp_path, argv):
    line = one_line(runner.invoke(app, argv(_unwritable_dir(tmp_path))))
    assert "cannot write" in line


# -- property-based: generated garbage keeps the contract ---------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)


@SETTINGS
@given(data=st.one_of(values, st.dictionaries(st.sampled_from(
    ["kind", "name", "peak_macs_per_s", "memory_bandwidth_bytes_per_s", "rate_bytes_per_s", "rtt_ms", "source",
     "efficiency", "stages", "model", "method", "dtype"]), values, max_size=6)))
def test_generated_yaml_never_crashes_a_file_option(data, tmp_path_factory):
    import yaml
    from typer.testing import CliRunner

    folder = tmp_path_factory.mktemp("gen")
    path = folder / "input.yaml"
    try:
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
    except (yaml.YAMLError, UnicodeEncodeError):
        return
    runner = CliRunner()
    for args in (_profile_args(path), _split_link_args(path), _recipe_args(path)):
        result = runner.invoke(app, args)
        one_line(result)
        assert not (folder / "never").exists()


MANIFEST_FIELDS = ["pairs.0.cut", "pairs.0.cut_index", "pairs.0.directory", "pairs.0.device.file",
                   "pairs.0.device.sha256", "pairs.0.device.size_bytes", "pairs.0.device.inputs",
                   "pairs.0.device.inputs.0.shape", "pairs.0.device.inputs.0.dtype", "pairs.0.crossing",
                   "pairs.0.server.outputs.0.name", "pairs.0.codec", "pairs.0.codec.params", "pairs.0.exits",
                   "pairs.0.verification", "source_model", "source_model.spec", "opset", "pairs", "plan_table"]


@SETTINGS
@given(field=st.sampled_from(MANIFEST_FIELDS), value=values)
def test_generated_manifest_damage_is_refused_in_one_line(field, value, tiny_export, tmp_path_factory):
    from typer.testing import CliRunner

    copy = tmp_path_factory.mktemp("gen") / "copy"
    shutil.copytree(tiny_export, copy)
    data = json.loads((copy / "manifest.json").read_text())
    before = json.dumps(data)
    _set(field, value)(data)
    if json.dumps(data) == before:
        return
    (copy / "manifest.json").write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["split", "verify", str(copy), "--verify-count", "2"])
    one_line(result, code=3 if result.exit_code == 3 else 2)


@SETTINGS
@given(beta=st.text(max_size=12), drop=st.text(max_size=8), count=st.text(max_size=6))
def test_generated_option_values_are_refused_before_any_work(beta, drop, count, tmp_path_factory):
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("gen") / "b.json"
    result = CliRunner().invoke(app, ["split", "bottleneck", "zoo:efficientnet-lite0", "--cut", "nope", "--beta",
                                      beta or "x", "--max-drop", drop or "x", "--verify-count", count or "x",
                                      "--out", str(out)])
    one_line(result)
    assert not out.exists()


def test_verify_refuses_a_manifest_that_lists_the_same_pair_twice(runner, tampered):
    _, edit = tampered
    line = one_line(verify(runner, edit(lambda d: d["pairs"].append(d["pairs"][0])), "--trust-source"))
    assert "listed more than once" in line, line


@pytest.mark.parametrize("scale", [[0.0, 0.0], [1.0, -1.0], []])
def test_codec_parameters_that_make_no_codec_are_refused_naming_the_pair(tiny_export, scale):
    from aiflow_cli.codecs.registry import codec_of
    from aiflow_cli.errors import ConfigError
    from aiflow_cli.schemas.manifest import load_manifest

    pair = load_manifest(tiny_export).pairs[0]
    pair.codec.name = "int8-channel"
    pair.codec.params = {"wire_dtype": "int8", "scale": scale, "zero_point": [0.0] * len(scale), "axis": 1, "ndim": 4}
    with pytest.raises(ConfigError, match=f"pair '{pair.cut}'.*scale must be a finite number above 0"):
        codec_of(pair)
