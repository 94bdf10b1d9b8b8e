"""Recipes: every shipped recipe validates; bad ones fail before any work, naming file, stage and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiflow_cli.cli.main import app
from aiflow_cli.errors import ConfigError
from aiflow_cli.schemas.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.model and recipe.stages


def test_the_five_promised_recipes_are_shipped():
    names = {load_recipe(p).name for p in RECIPES}
    assert {"efficientnet-lite0-int8-static", "efficientnet-lite0-prune30-distill", "minilm-l6-int8-dynamic",
            "smollm2-135m-int4", "smollm2-135m-draft"} <= names


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def _fails(runner, tmp_path, recipe: Path) -> str:
    out = tmp_path / "out"
    result = runner.invoke(app, ["compress", "zoo:efficientnet-lite0", "--recipe", str(recipe), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    return lines[0]


def test_unknown_stage_kind_names_file_and_stage(runner, tmp_path):
    line = _fails(runner, tmp_path, _write(tmp_path, "name: x\nstages:\n  - kind: evaluate\n  - kind: sparsify\n"))
    assert str(tmp_path / "recipe.yaml") in line and "stage 2" in line and "unknown stage kind 'sparsify'" in line


def test_wrong_type_names_the_field(runner, tmp_path):
    line = _fails(runner, tmp_path, _write(tmp_path, "name: x\nstages:\n  - kind: distill\n    steps: many\n"))
    assert "stage 1 (distill)" in line and "field 'steps'" in line


def test_sparsity_outside_0_1_is_refused(runner, tmp_path):
    line = _fails(runner, tmp_path, _write(
        tmp_path, "name: x\nstages:\n  - kind: prune\n    method: magnitude\n    sparsity: 1.0\n"))
    assert "stage 1 (prune/magnitude)" in line and "field 'sparsity'" in line


def test_negative_sparsity_is_refused():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        path.write_text("name: x\nstages:\n  - kind: prune\n    method: channels\n    sparsity: -0.1\n")
        with pytest.raises(ConfigError, match="field 'sparsity'"):
            load_recipe(path)


def test_unknown_field_in_a_stage_is_named(runner, tmp_path):
    line = _fails(runner, tmp_path, _write(
        tmp_path, "name: x\nstages:\n  - kind: quantize\n    method: static\n    calibration_sample: 8\n"))
    assert "unknown field 'calibration_sample'" in line


def test_unknown_method_lists_the_methods(runner, tmp_path):
    line = _fails(runner, tmp_path, _write(tmp_path, "name: x\nstages:\n  - kind: quantize\n    method: fp8\n"))
    assert "field 'method'" in line and "dynamic, static, int4" in line


def test_missing_calibration_data_fails_before_work(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("AIFLOW_DATA", str(tmp_path / "nowhere"))
    line = _fails(runner, tmp_path, _write(
        tmp_path, "name: x\nstages:\n  - kind: quantize\n    method: static\n    calibration_samples: 8\n"))
    assert "stage 1 (quantize/static)" in line and "field 'calibration_samples'" in line
    assert "missing calibration/training data" in line


def test_distill_data_path_that_does_not_exist_is_named(runner, tmp_path):
    line = _fails(runner, tmp_path, _write(
        tmp_path, f"name: x\nstages:\n  - kind: distill\n    steps: 1\n    data: {tmp_path / 'missing'}\n"))
    assert "field 'data'" in line and "does not exist" in line


def test_prune_after_quantize_is_refused(runner, tmp_path):
    line = _fails(runner, tmp_path, _write(tmp_path, "name: x\nstages:\n  - kind: quantize\n    method: static\n"
                                                     "  - kind: prune\n    method: magnitude\n    sparsity: 0.5\n"))
    assert "stage 2 (prune)" in line and "comes after quantize" in line


def test_malformed_yaml_is_one_line(runner, tmp_path):
    line = _fails(runner, tmp_path, _write(tmp_path, "name: [x\nstages: -\n"))
    assert "malformed YAML" in line


def test_depth_pruning_a_cnn_is_refused_before_work(runner, tmp_path):
    line = _fails(runner, tmp_path, _write(tmp_path, "name: x\nstages:\n  - kind: prune\n    method: depth\n"
                                                     "    keep_fraction: 0.5\n"))
    assert "depth pruning is implemented for causal LMs" in line
