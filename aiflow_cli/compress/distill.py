"""Knowledge distillation: the model before compression teaches the compressed one.

Loss (Hinton et al. 2015) on logits with temperature T::

    L = T^2 * KL(softmax(teacher / T) || softmax(student / T))   [+ w * MSE(hidden states) for LMs]

Sentence encoders have no logits: their loss is 1 - cos(student, teacher) on the embedding.
Data comes from the training split only (ImageNet class_index % 5 != 0, WikiText-2 valid).
BatchNorm statistics stay frozen: a few hundred images are too few to re-estimate them.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from aiflow_cli.compress.tasks import CausalLMKit, EmbeddingKit, ImageKit, TaskKit
from aiflow_cli.schemas.recipe import Distill

__all__ = ["distill", "kd_loss", "lm_agreement"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="batchmean") * t * t


def _freeze_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def lm_agreement(student: nn.Module, teacher: nn.Module, ids: torch.Tensor, context: int = 256) -> float:
    """Top-1 next-token agreement of student with teacher over ``ids`` (evaluation tokens)."""
    agree = total = 0
    for start in range(0, len(ids) - context + 1, context):
        w = ids[start:start + context][None]
        agree += int((student(w).logits.argmax(-1) == teacher(w).logits.argmax(-1)).sum())
        total += w.numel()
    return agree / max(total, 1)


def _image_batches(kit: ImageKit, stage: Distill) -> Callable[[int], Any]:
    images, _ = kit.train_tensors()
    rng = random.Random(0)

    def batch(_: int) -> torch.Tensor:
        idx = rng.sample(range(len(images)), min(stage.batch_size, len(images)))
        x = images[idx]
        flip = torch.rand(len(idx)) < 0.5
        x[flip] = x[flip].flip(-1)
        return x

    return batch


def _text_batches(kit: TaskKit, stage: Distill) -> Callable[[int], Any]:
    if isinstance(kit, CausalLMKit):
        ids = kit.token_ids("valid")
        rng = random.Random(0)

        def batch(_: int) -> torch.Tensor:
            starts = [rng.randrange(0, len(ids) - stage.seq_len) for _ in range(stage.batch_size)]
            return torch.stack([ids[s:s + stage.seq_len] for s in starts])

        return batch
    from aiflow_cli.data.text import wikitext_sentences

    sentences = wikitext_sentences("valid", 4096) or []
    rng = random.Random(0)

    def batch(_: int) -> tuple[torch.Tensor, torch.Tensor]:
        enc = kit.model.tokenizer(rng.sample(sentences, stage.batch_size), padding=True, truncation=True,
                                  max_length=stage.seq_len, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    return batch


def distill(student: nn.Module, teacher: nn.Module, stage: Distill, kit: TaskKit,
            progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    figures: dict[str, Any] = {"steps": stage.steps, "batch_size": stage.batch_size, "temperature": stage.temperature}
    held_out = None
    if isinstance(kit, CausalLMKit):
        held_out = kit.token_ids("test", 2048)
        figures["agreement_before"] = lm_agreement(student, teacher, held_out)
    batches = _image_batches(kit, stage) if isinstance(kit, ImageKit) else _text_batches(kit, stage)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=stage.learning_rate, weight_decay=stage.weight_decay)
    student.train()
    _freeze_bn(student)
    losses, t0 = [], time.perf_counter()
    for step in range(stage.steps):
        x = batches(step)
        with torch.no_grad():
            t_out = teacher(x) if not isinstance(kit, CausalLMKit) else teacher(x, output_hidden_states=stage.hidden_mse_weight > 0)
        s_out = student(x) if not isinstance(kit, CausalLMKit) else student(x, output_hidden_states=stage.hidden_mse_weight > 0)
        if isinstance(kit, EmbeddingKit):
            loss = (1 - F.cosine_similarity(s_out, t_out, dim=-1)).mean()
        elif isinstance(kit, CausalLMKit):
            loss = kd_loss(s_out.logits.flatten(0, 1), t_out.logits.flatten(0, 1), stage.temperature)
            if stage.hidden_mse_weight > 0:  # final hidden states are aligned one to one
                loss = loss + stage.hidden_mse_weight * F.mse_loss(s_out.hidden_states[-1], t_out.hidden_states[-1])
        else:
            loss = kd_loss(s_out, t_out, stage.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress:
            progress("distill", step + 1, stage.steps)
    student.eval()
    figures["loss_first"] = round(sum(losses[:10]) / len(losses[:10]), 5)
    figures["loss_last"] = round(sum(losses[-10:]) / len(losses[-10:]), 5)
    figures["seconds_per_step"] = round((time.perf_counter() - t0) / stage.steps, 3)
    if held_out is not None:
        figures["agreement_after"] = lm_agreement(student, teacher, held_out)
        figures["agreement_tokens"] = len(held_out) // 256 * 256
    return figures
