"""Pruning stages on the float torch model.

* magnitude: unstructured L1 pruning of every conv / linear weight (torch.nn.utils.prune), made
  permanent; the file stays dense, so this saves nothing until a sparse runtime uses it.
* channels: structured channel pruning with dependency handling (torch-pruning's DepGraph keeps
  residual adds and depthwise convs consistent); the classifier's output stays whole.
* depth: drop the transformer layers with the least block influence, ``1 - cos(h_in, h_out)``
  averaged over calibration tokens (Men et al. 2024, "ShortGPT").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aiflow_cli.compress.tasks import TaskKit
from aiflow_cli.errors import InputError
from aiflow_cli.schemas.recipe import PruneChannels, PruneDepth, PruneMagnitude

__all__ = ["prune_magnitude", "prune_channels", "prune_depth", "count_params", "recalibrate_batchnorm"]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def prune_magnitude(module: nn.Module, stage: PruneMagnitude) -> dict[str, Any]:
    import torch.nn.utils.prune as tprune

    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in layers:
        tprune.l1_unstructured(m, "weight", amount=stage.sparsity)
        tprune.remove(m, "weight")
    total = sum(m.weight.numel() for m in layers)
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    return {"layers": len(layers), "weight_sparsity": zeros / total}


def prune_channels(module: nn.Module, stage: PruneChannels, kit: TaskKit) -> dict[str, Any]:
    import torch_pruning as tp

    if kit.model.task != "image-classification":
        raise InputError(f"channel pruning is implemented for CNN classifiers, not {kit.model.task}",
                         "use method: depth for transformers")
    before = count_params(module)
    example = torch.zeros(1, 3, 224, 224)
    head = [m for m in module.modules() if isinstance(m, nn.Linear)][-1:]  # keep the 1000 classes
    pruner = tp.pruner.MetaPruner(module, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=stage.sparsity, ignored_layers=head, round_to=stage.round_to)
    pruner.step()
    images, _ = kit.train_tensors()
    recalibrate_batchnorm(module, images)
    return {"params_before": before, "params_after": count_params(module), "pruning_ratio": stage.sparsity,
            "batchnorm_recalibrated_on": len(images)}


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, images: torch.Tensor, batch: int = 32) -> None:
    """Re-estimate BatchNorm statistics on training images: removing channels shifts every
    downstream activation distribution, and stale running statistics alone can zero the accuracy."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    for i in range(0, len(images), batch):
        module(images[i:i + batch])
    for m, (momentum, training) in zip(norms, saved):
        m.momentum = momentum
        m.train(training)


@torch.no_grad()
def prune_depth(module: nn.Module, stage: PruneDepth, kit: TaskKit) -> dict[str, Any]:
    if kit.model.task != "causal-lm":
        raise InputError(f"depth pruning is implemented for causal LMs, not {kit.model.task}")
    layers = module.model.layers
    n = len(layers)
    keep = max(1, round(stage.keep_fraction * n))
    ids = kit.token_ids("valid", stage.calibration_samples * stage.calibration_tokens)
    windows = ids[: len(ids) // stage.calibration_tokens * stage.calibration_tokens].view(-1, stage.calibration_tokens)
    from aiflow_cli.models.transformer_segments import DecoderLayer, KVState

    wrapped = [DecoderLayer(layer, module.model.rotary_emb, KVState()) for layer in layers]
    influence = torch.zeros(n)
    for w in windows:
        h = module.model.embed_tokens(w[None])
        for i, layer in enumerate(wrapped):
            out = layer(h)
            influence[i] += 1 - torch.nn.functional.cosine_similarity(h[0], out[0], dim=-1).mean()
            h = out
    influence /= len(windows)
    kept = sorted(torch.topk(influence, keep).indices.tolist())
    module.model.layers = nn.ModuleList(layers[i] for i in kept)
    for new_idx, layer in enumerate(module.model.layers):
        layer.self_attn.layer_idx = new_idx
    module.config.num_hidden_layers = keep
    if hasattr(module.config, "layer_types") and module.config.layer_types:
        module.config.layer_types = [module.config.layer_types[i] for i in kept]
    return {"layers_before": n, "layers_after": keep, "kept_layers": kept,
            "block_influence": [round(float(v), 5) for v in influence]}
