"""``aiflow compress``: run a recipe's stages in order and report before / after.

::

    load model -> export baseline.onnx -> [prune | distill]* (torch) -> export model.onnx
               -> [quantize] (onnxruntime) -> evaluate before vs after -> DIR (renamed into place)

Everything is checked before work starts (recipe, data, task fit); everything is written into a
temporary sibling of DIR that is renamed only when the whole recipe succeeded, so an interrupted
or failed run leaves no half-written DIR.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
import yaml

from aiflow_cli.compress import distill as distill_mod
from aiflow_cli.compress import prune, quantize
from aiflow_cli.compress.decode import decode_latency, export_with_past
from aiflow_cli.compress.tasks import TaskKit, task_kit
from aiflow_cli.errors import ConfigError, InputError
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.schemas.recipe import (
    Distill,
    Evaluate,
    PruneChannels,
    PruneDepth,
    PruneMagnitude,
    QuantizeDynamic,
    QuantizeInt4,
    QuantizeStatic,
    Recipe,
    load_recipe,
)
from aiflow_cli.schemas.report import (
    CompressedModel,
    CompressReport,
    Measured,
    MetricValue,
    StageRecord,
)

__all__ = ["run_compress", "preflight", "torch_module"]

Progress = Callable[[str, int, int], None]
_NEEDS_DATA = (QuantizeStatic, Distill, PruneDepth)


def torch_module(model: SegmentedModel) -> torch.nn.Module:
    """The float module compression changes (its parameters are shared with the segments)."""
    return model.extras["hf_model"] if model.task == "causal-lm" else model.whole


def _label(stage: Any) -> str:
    method = getattr(stage, "method", None)
    return f"{stage.kind}/{method}" if method else stage.kind


def preflight(recipe: Recipe, path: Path, kit: TaskKit) -> str:
    """Fail before any work on anything the recipe cannot do with this model and data."""
    source = "none needed"
    task = kit.model.task
    for i, stage in enumerate(recipe.stages):
        where = f"{path}: stage {i + 1} ({_label(stage)})"
        if isinstance(stage, PruneChannels) and task != "image-classification":
            raise ConfigError(f"{where}: field 'method': channel pruning is implemented for CNN classifiers, not {task}",
                              "use method: depth for causal LMs")
        if isinstance(stage, PruneDepth) and task != "causal-lm":
            raise ConfigError(f"{where}: field 'method': depth pruning is implemented for causal LMs, not {task}")
        if isinstance(stage, QuantizeInt4) and task == "image-classification":
            raise ConfigError(f"{where}: field 'method': int4 weight-only targets transformer MatMuls",
                              "use method: static for CNNs")
        if isinstance(stage, Distill) and stage.data is not None and not Path(stage.data).exists():
            raise ConfigError(f"{where}: field 'data': {stage.data} does not exist", "point it at the training data")
        if isinstance(stage, _NEEDS_DATA):
            field = {QuantizeStatic: "calibration_samples", Distill: "data", PruneDepth: "calibration_samples"}[type(stage)]
            try:
                source = kit.check_data()
            except InputError as exc:
                raise ConfigError(f"{where}: field '{field}': missing calibration/training data: {exc.message}",
                                  "pass --data or provide ../shared/data") from exc
    return source


def _save_torch(model: SegmentedModel, module: torch.nn.Module, tmp: Path) -> tuple[str, dict[str, str]]:
    if model.task == "image-classification":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp / "model.safetensors"))
        return "efficientnet-lite", {"weights": "model.safetensors"}
    hf = module if model.task == "causal-lm" else module.model
    hf.save_pretrained(tmp / "hf", safe_serialization=True)
    model.tokenizer.save_pretrained(tmp / "hf")
    return ("hf-causal-lm" if model.task == "causal-lm" else "hf-encoder"), {"hf_dir": "hf"}


def _paired_latency(before: Path, after: Path, feeds: dict[str, np.ndarray], repeats: int,
                    blocks: int = 5) -> tuple[list[float], list[float], list[float]]:
    """Alternate blocks of before / after runs; ratio = median over blocks of after/before medians."""
    from aiflow_cli.ort import ort_session

    sessions = [ort_session(before), ort_session(after)]
    for s in sessions:
        s.run(None, feeds)
    samples: list[list[float]] = [[], []]
    ratios = []
    per_block = max(1, repeats // blocks)
    for _ in range(blocks):
        block = []
        for k, s in enumerate(sessions):
            ts = []
            for _ in range(per_block):
                t0 = time.perf_counter()
                s.run(None, feeds)
                ts.append(time.perf_counter() - t0)
            samples[k].extend(ts)
            block.append(statistics.median(ts))
        ratios.append(block[1] / block[0])
    return samples[0], samples[1], ratios


def _runner(path: Path) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    from aiflow_cli.ort import ort_session

    session = ort_session(path)
    return lambda feeds: session.run(None, feeds)[0]


def run_compress(spec: str | None, recipe_path: Path, out_dir: Path, data: Path | None = None, force: bool = False,
                 progress: Progress | None = None, trust_source: bool = False) -> CompressReport:
    from aiflow_cli.models import load_model
    from aiflow_cli.models.sources import load_model_named_in_file
    from aiflow_cli.profiling.host import host_info
    from aiflow_cli.staging import check_output_dir, staged_dir

    t_start = time.perf_counter()
    recipe = load_recipe(recipe_path)
    if not (spec or recipe.model):
        raise InputError(f"{recipe_path}: no model given", "pass MODEL or set 'model:' in the recipe")
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force, option="--out")
    if data is not None and not Path(data).exists():
        raise InputError(f"--data {data}: does not exist")
    model = load_model(spec) if spec else load_model_named_in_file(recipe.model, f"{recipe_path}: field 'model'",
                                                                   trust_source)
    spec = model.spec
    kit = task_kit(model, data)
    data_source = preflight(recipe, recipe_path, kit)

    module = torch_module(model)
    teacher = copy.deepcopy(module).eval()
    params_before = prune.count_params(module)
    evaluate = next((s for s in recipe.stages if isinstance(s, Evaluate)), Evaluate(kind="evaluate"))
    records: list[StageRecord] = []
    with staged_dir(out_dir, force, option="--out") as tmp:
        baseline = tmp / "baseline.onnx"
        onnx.save(kit.export(module), str(baseline))
        current = tmp / "model.onnx"
        exported_after_torch = False
        quantized = False
        for i, stage in enumerate(recipe.stages):
            t0 = time.perf_counter()
            figures: dict[str, Any]
            if isinstance(stage, PruneMagnitude):
                figures = prune.prune_magnitude(module, stage)
            elif isinstance(stage, PruneChannels):
                figures = prune.prune_channels(module, stage, kit)
            elif isinstance(stage, PruneDepth):
                figures = prune.prune_depth(module, stage, kit)
            elif isinstance(stage, Distill):
                figures = distill_mod.distill(module, teacher, stage, kit, progress)
            elif isinstance(stage, (QuantizeDynamic, QuantizeStatic, QuantizeInt4)):
                fp32 = tmp / "float.onnx"
                onnx.save(kit.export(module), str(fp32))
                exported_after_torch = True
                if isinstance(stage, QuantizeDynamic):
                    figures, fused = quantize.quantize_dynamic_stage(fp32, current, stage, kit)
                    if fused is not None and params_before == prune.count_params(module):
                        fused.replace(baseline)  # the fair baseline: same fusions as the int8 model
                        figures["baseline"] = "fp32 with the same onnxruntime fusions"
                elif isinstance(stage, QuantizeStatic):
                    figures = quantize.quantize_static_stage(fp32, current, stage, kit)
                else:
                    figures = quantize.quantize_int4_stage(fp32, current, stage, kit)
                fp32.unlink(missing_ok=True)
                quantized = True
            else:  # Evaluate: done once at the end, with this stage's settings
                figures = {"latency_repeats": stage.latency_repeats}
            records.append(StageRecord(index=i + 1, kind=stage.kind, method=getattr(stage, "method", None),
                                       seconds=round(time.perf_counter() - t0, 3), figures=figures))
            if progress:
                progress("stages", i + 1, len(recipe.stages))
        if not exported_after_torch:
            onnx.save(kit.export(module), str(current))

        decode: dict[str, Any] | None = None
        if model.task == "causal-lm":  # judged on decode: both graphs again, with a KV cache
            if progress:
                progress("decode latency", 0, 1)
            b_in, _ = export_with_past(teacher, tmp / "baseline_with_past.onnx", [], kit)
            a_in, notes = export_with_past(module, tmp / "model_with_past.onnx", list(recipe.stages), kit)
            decode = decode_latency(tmp / "baseline_with_past.onnx", tmp / "model_with_past.onnx", b_in, a_in,
                                    model.tokenizer.vocab_size, max(3, evaluate.latency_repeats // 4))
            decode["notes"] = "; ".join(notes) or "float"
            (tmp / "baseline_with_past.onnx").unlink()
            if progress:
                progress("decode latency", 1, 1)
        feeds = kit.latency_feeds()
        b_lat, a_lat, ratios = _paired_latency(baseline, current, feeds, evaluate.latency_repeats)
        original = kit.torch_runner(teacher)  # the float torch model the recipe started from
        before_metric = kit.metric(_runner(baseline), original, evaluate.eval_samples)
        after_metric = kit.metric(_runner(current), original, evaluate.eval_samples)
        architecture, files = _save_torch(model, module, tmp)
        files["onnx"] = "model.onnx"
        if decode is not None:
            files["onnx_with_past"] = "model_with_past.onnx"
        report = CompressReport(
            model=spec, recipe=recipe.name, data=data_source, host=host_info(),
            latency_input=", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items()),
            before=_measured(baseline, params_before, b_lat, before_metric, model.extras.get("weights", "")),
            after=_measured(current, prune.count_params(module), a_lat, after_metric),
            latency_ratio_paired=round(statistics.median(ratios), 4),
            latency_ratios=[round(r, 4) for r in ratios], stages=records, decode=decode,
            seconds_total=round(time.perf_counter() - t_start, 2),
        )
        baseline.unlink()
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        (tmp / "report.json").write_text(report.model_dump_json(indent=2) + "\n")
        compressed = CompressedModel(base_model=spec, task=model.task, recipe=recipe.name, architecture=architecture,
                                     quantized=quantized, files=files)
        (tmp / "compressed.json").write_text(json.dumps(compressed.model_dump(), indent=1) + "\n")
    return report


def _measured(path: Path, params: int, latency: list[float], metric: Any, weights: str = "") -> Measured:
    ms = sorted(t * 1e3 for t in latency)
    return Measured(size_bytes=path.stat().st_size, params=params, weights=weights,
                    latency_ms=round(statistics.median(ms), 4),
                    latency_p90_ms=round(ms[int(0.9 * (len(ms) - 1))], 4),
                    metric=MetricValue(name=metric.name, value=round(metric.value, 6),
                                       extra={k: round(float(v), 6) for k, v in metric.extra.items()}))
