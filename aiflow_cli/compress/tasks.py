"""What compression needs to know about each kind of model: how to export it to ONNX, what data
calibrates and trains it (training splits only), and which metric judges it (evaluation splits).

* image classification: ImageNet sample; calibrate / distill on the train split, top-1 on the
  test split (class_index % 5 == 0).
* sentence embedding: WikiText-2 valid lines to calibrate / distill; mean cosine to the original
  model's embeddings on WikiText-2 test lines.
* causal LM: WikiText-2 valid to calibrate / distill; WikiText-2 test perplexity (context
  ``PPL_CONTEXT``, stride = context, first ``PPL_TOKENS`` tokens) and top-1 next-token agreement
  with the original model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch

from aiflow_cli.errors import InputError
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.onnx_io import Exporter, export_onnx

__all__ = ["TaskKit", "task_kit", "PPL_CONTEXT", "PPL_TOKENS", "OrtRun", "COMPRESS_EXPORTER"]

PPL_CONTEXT = 256
PPL_TOKENS = 16384
# Whole-model graphs for compress keep the TorchScript exporter: they feed onnxruntime's
# quantisers and are then cut again as ONNX sources, and an EfficientNet-Lite0 graph from the
# dynamo exporter, statically quantised to int8 and cut at its middle node (node_Conv_812),
# failed its lossless pair verification (max diff 0.153 at output scale 13.5, measured 2026-11-28)
# where the TorchScript graph's passes. Split pairs use dynamo (aiflow_cli.onnx_io).
COMPRESS_EXPORTER: Exporter = "torchscript"
OrtRun = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class Metric:
    name: str
    value: float
    extra: dict[str, float]


class TaskKit:
    """Base: subclasses fill in export, data and metric for one task."""

    metric_name = ""
    higher_is_better = True

    def __init__(self, model: SegmentedModel, data: Path | None) -> None:
        self.model, self.data = model, data

    # ONNX ------------------------------------------------------------------------------------
    input_names: tuple[str, ...] = ()

    def exportable(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module exactly as it is exported (and as :meth:`torch_runner` runs it)."""
        return module

    def export(self, module: torch.nn.Module) -> onnx.ModelProto:
        raise NotImplementedError

    def torch_runner(self, module: torch.nn.Module) -> OrtRun:
        """Run the float torch module on the same feeds as the ONNX files: the reference the
        exported baseline itself is measured against (so "before" is a measurement, not 1.0)."""
        wrapped = self.exportable(module).eval()

        @torch.no_grad()
        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            xs = [torch.from_numpy(feeds[n]) for n in self.input_names]
            return wrapped(xs[0] if len(xs) == 1 else tuple(xs)).numpy()

        return run

    def latency_feeds(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def hf_config(self):  # noqa: ANN201 - a transformers PretrainedConfig, or None
        """The transformers config optimum reads (model type, heads, width); None for other models."""
        hf = self.model.extras.get("hf_model") or getattr(self.model.whole, "model", None)
        return getattr(hf, "config", None) if hf is not None and hasattr(hf, "config") else None

    # data ------------------------------------------------------------------------------------
    def check_data(self) -> str:
        """Raise if the training data this task needs is missing; return where it comes from."""
        raise NotImplementedError

    def calibration_feeds(self, n: int) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    # metric ----------------------------------------------------------------------------------
    def metric(self, run: OrtRun, reference: OrtRun, samples: int | None) -> Metric:
        """The task metric of ``run``, with its agreement to ``reference`` (the original model)."""
        raise NotImplementedError


class ImageKit(TaskKit):
    metric_name = "top1"
    input_names = ("image",)

    def _records(self, split: str):  # noqa: ANN202
        from aiflow_cli.data.imagenet import read_labels

        return read_labels(self.data, split=split)

    def check_data(self) -> str:
        from aiflow_cli.data.imagenet import imagenet_sample_dir

        root = self.data or imagenet_sample_dir()
        if not (Path(root) / "labels.csv").is_file():
            raise InputError(f"{root}: no labels.csv", "pass --data pointing at an ImageNet-style folder")
        return f"{root} (train split: class_index % 5 in 2, 3, 4)"

    def export(self, module: torch.nn.Module) -> onnx.ModelProto:
        x = torch.zeros(1, 3, 224, 224)
        return export_onnx(module, x, ["image"], ["logits"], {"image": {0: "batch"}, "logits": {0: "batch"}},
                           exporter=COMPRESS_EXPORTER)

    def latency_feeds(self) -> dict[str, np.ndarray]:
        from aiflow_cli.models.inputs import image_input

        return {"image": image_input(1).numpy()}

    def calibration_feeds(self, n: int) -> list[dict[str, np.ndarray]]:
        from aiflow_cli.data.imagenet import load_image_tensor

        records = self._records("train")
        random.Random(0).shuffle(records)
        return [{"image": load_image_tensor(r.path)[None].numpy()} for r in records[:n]]

    def train_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        from aiflow_cli.data.imagenet import load_batch

        return load_batch(self._records("train"))

    def metric(self, run: OrtRun, reference: OrtRun, samples: int | None) -> Metric:
        from aiflow_cli.data.imagenet import load_batch

        records = self._records("test")[:samples]
        correct = agree = 0
        for i in range(0, len(records), 20):
            images, labels = load_batch(records[i:i + 20])
            logits = run({"image": images.numpy()})
            pred = logits.argmax(-1)
            correct += int((pred == labels.numpy()).sum())
            agree += int((pred == reference({"image": images.numpy()}).argmax(-1)).sum())
        return Metric("top1 (test split)", correct / len(records),
                      {"images": len(records), "agreement_with_original": agree / len(records)})


class EmbeddingKit(TaskKit):
    metric_name = "cosine"
    input_names = ("input_ids", "attention_mask")

    def check_data(self) -> str:
        from aiflow_cli.data.text import wikitext_path

        if not wikitext_path("valid").is_file():
            raise InputError(f"{wikitext_path('valid')}: not found", "WikiText-2 valid is the calibration data")
        return str(wikitext_path("valid"))

    def export(self, module: torch.nn.Module) -> onnx.ModelProto:
        ids = torch.ones(1, 16, dtype=torch.long)
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                "embedding": {0: "batch"}}
        return export_onnx(module, (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], ["embedding"], axes,
                           exporter=COMPRESS_EXPORTER)

    def latency_feeds(self) -> dict[str, np.ndarray]:
        from aiflow_cli.models.inputs import encoder_input

        ids, mask = encoder_input(8, 128, self.model.tokenizer.vocab_size)
        return {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}

    def _feeds(self, sentences: list[str]) -> dict[str, np.ndarray]:
        enc = self.model.tokenizer(sentences, padding=True, truncation=True, max_length=128, return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}

    def calibration_feeds(self, n: int) -> list[dict[str, np.ndarray]]:
        from aiflow_cli.data.text import wikitext_sentences

        sentences = wikitext_sentences("valid", n) or []
        return [self._feeds(sentences[i:i + 8]) for i in range(0, len(sentences), 8)]

    def metric(self, run: OrtRun, reference: OrtRun, samples: int | None) -> Metric:
        from aiflow_cli.data.text import wikitext_sentences

        sentences = wikitext_sentences("test", samples or 256)
        if sentences is None:
            raise InputError("WikiText-2 test is needed for the cosine metric", "set AIFLOW_DATA")
        cos = []
        for i in range(0, len(sentences), 16):
            feeds = self._feeds(sentences[i:i + 16])
            a, b = run(feeds), reference(feeds)
            cos.extend(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).tolist())
        return Metric("mean cosine to original (WikiText-2 test)", float(np.mean(cos)),
                      {"sentences": len(sentences), "min_cosine": float(np.min(cos))})


class CausalLMKit(TaskKit):
    metric_name = "perplexity"
    higher_is_better = False
    input_names = ("input_ids",)

    def exportable(self, module: torch.nn.Module) -> torch.nn.Module:
        from aiflow_cli.compress.lm_onnx import FullCausalLM

        return FullCausalLM(module)

    def check_data(self) -> str:
        from aiflow_cli.data.text import wikitext_path

        if not wikitext_path("valid").is_file():
            raise InputError(f"{wikitext_path('valid')}: not found", "WikiText-2 valid is the training data")
        return str(wikitext_path("valid"))

    def export(self, module: torch.nn.Module) -> onnx.ModelProto:
        full = self.exportable(module).eval()
        ids = torch.ones(1, 8, dtype=torch.long)
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
        return export_onnx(full, ids, ["input_ids"], ["logits"], axes, exporter=COMPRESS_EXPORTER)

    def latency_feeds(self) -> dict[str, np.ndarray]:
        from aiflow_cli.models.inputs import token_input

        return {"input_ids": token_input(1, 64, self.model.tokenizer.vocab_size).numpy()}

    def token_ids(self, split: str, limit: int | None = None) -> torch.Tensor:
        from aiflow_cli.data.text import wikitext_path

        path = Path(self.data) if self.data and split == "valid" else wikitext_path(split)
        text = path.read_text(encoding="utf-8")
        if limit:
            text = text[: limit * 8]  # ~4 characters per token: read only what is needed
        ids = self.model.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
        return ids[:limit] if limit else ids

    def calibration_feeds(self, n: int) -> list[dict[str, np.ndarray]]:
        ids = self.token_ids("valid", n * 128)
        return [{"input_ids": ids[i:i + 128][None].numpy()} for i in range(0, len(ids) - 127, 128)][:n]

    def metric(self, run: OrtRun, reference: OrtRun, samples: int | None) -> Metric:
        tokens = samples or PPL_TOKENS
        ids = self.token_ids("test", tokens + 1)
        nll, count, agree = 0.0, 0, 0
        for start in range(0, len(ids) - 1, PPL_CONTEXT):
            window = ids[start:start + PPL_CONTEXT + 1]
            if len(window) < 2:
                break
            feeds = {"input_ids": window[:-1][None].numpy()}
            logits = torch.from_numpy(run(feeds))[0]
            nll += float(torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum"))
            count += len(window) - 1
            agree += int((logits.argmax(-1).numpy() == reference(feeds)[0].argmax(-1)).sum())
        extra = {"tokens": count, "context": PPL_CONTEXT, "stride": PPL_CONTEXT, "next_token_agreement": agree / count}
        return Metric("WikiText-2 test perplexity", math.exp(nll / count), extra)


def task_kit(model: SegmentedModel, data: Path | None) -> TaskKit:
    kits = {"image-classification": ImageKit, "sentence-embedding": EmbeddingKit, "causal-lm": CausalLMKit}
    if model.task not in kits:
        raise InputError(f"aiflow compress does not know how to evaluate a '{model.task}' model",
                         "compress supports image classifiers, sentence encoders and causal LMs")
    return kits[model.task](model, data)

