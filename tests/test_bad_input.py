"""Bad input: one clear line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import PROFILES

from aiflow_cli.cli.main import app


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_unknown_model_form_names_the_accepted_forms(runner, tmp_path):
    out = tmp_path / "p.json"
    line = _one_error_line(runner.invoke(app, ["profile", "resnet50", "--out", str(out)]))
    assert "unknown model 'resnet50'" in line and "zoo:NAME" in line
    assert not out.exists()


def test_unknown_zoo_name_lists_the_zoo(runner, tmp_path):
    out = tmp_path / "p.json"
    line = _one_error_line(runner.invoke(app, ["profile", "zoo:resnet50", "--out", str(out)]))
    assert "unknown zoo model 'resnet50'" in line and "zoo:efficientnet-lite0" in line
    assert not out.exists()


def test_missing_onnx_file_is_named(runner, tmp_path):
    missing = tmp_path / "nope.onnx"
    line = _one_error_line(runner.invoke(app, ["profile", str(missing)]))
    assert str(missing) in line and "not found" in line


def test_malformed_target_yaml_names_file(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: device\nname: [unclosed\n")
    out = tmp_path / "p.json"
    line = _one_error_line(runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--target", str(bad),
                                               "--out", str(out)]))
    assert str(bad) in line and "malformed YAML" in line
    assert not out.exists()


def test_target_yaml_missing_field_is_named(runner, tmp_path):
    text = (PROFILES / "devices" / "raspberry-pi-5.yaml").read_text()
    bad = tmp_path / "no-bandwidth.yaml"
    bad.write_text("\n".join(l for l in text.splitlines() if not l.startswith("memory_bandwidth")))
    out = tmp_path / "p.json"
    line = _one_error_line(runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--target", str(bad),
                                               "--out", str(out)]))
    assert "missing field 'memory_bandwidth_bytes_per_s'" in line and str(bad) in line
    assert not out.exists()


def test_target_yaml_with_unknown_field_is_refused(runner, tmp_path):
    text = (PROFILES / "devices" / "raspberry-pi-5.yaml").read_text()
    bad = tmp_path / "typo.yaml"
    bad.write_text(text + "peak_macs_per_sec: 1\n")
    line = _one_error_line(runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--target", str(bad)]))
    assert "unknown field 'peak_macs_per_sec'" in line


def test_seq_len_zero_is_refused_before_loading(runner, tmp_path):
    out = tmp_path / "p.json"
    line = _one_error_line(runner.invoke(app, ["profile", "zoo:minilm-l6", "--seq-len", "0", "--out", str(out)]))
    assert "--seq-len must be at least 1" in line
    assert not out.exists()


def test_unwritable_out_is_refused_before_work(runner, tmp_path):
    if os.geteuid() == 0:  # permission bits do not stop root; /proc refuses new files for everyone
        target = Path("/proc/aiflow-profile.json")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "p.json"
    line = _one_error_line(runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--out", str(target)]))
    assert "not writable" in line and str(target) in line


def test_out_in_missing_folder_is_refused_before_work(runner, tmp_path):
    out = tmp_path / "no" / "such" / "p.json"
    line = _one_error_line(runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--out", str(out)]))
    assert "does not exist" in line
    assert not out.parent.exists()


def test_out_that_is_a_directory_is_refused(runner, tmp_path):
    line = _one_error_line(runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--out", str(tmp_path)]))
    assert "is a directory" in line


def test_debug_shows_the_traceback(runner):
    result = runner.invoke(app, ["--debug", "profile", "zoo:resnet50"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def test_bad_py_source_is_explained(runner):
    line = _one_error_line(runner.invoke(app, ["profile", "py:no_such_module_xyz:build"]))
    assert "cannot import build from no_such_module_xyz" in line
