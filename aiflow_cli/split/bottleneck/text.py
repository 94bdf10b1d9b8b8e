"""A learned bottleneck at a transformer cut, per token: the same objective as for images.

::

    device:  h (1, T, D) --each token a (D, 1, 1) "image": Fisher-whitened KLT, step--> z (T, D) --round--> q
    link:    q --range coder, learned per-channel tables--> bytes            (one message per window)
    server:  q --synthesis--> h_hat (1, T, D) --> the rest of the model

The codec is :class:`~aiflow_cli.codecs.learned.BottleneckNet` with every token treated as a 1x1
image, so the transform acts on one token's hidden state at a time and the decoder, the coder
and the manifest format are the image codec's. What changes is the task whose Fisher
information whitens the activation (distortion = the task's loss to second order):

* causal LMs: next-token KL to the unsplit model (labels sampled from the model's own
  prediction), fidelity = next-token top-1 agreement with the unsplit model;
* sentence encoders: the squared error of the normalised sentence embedding (``1 - cos`` to second
  order), whose Gauss-Newton matrix J^T J is estimated with random projections v^T J, fidelity =
  cosine to the unsplit embedding.

Why no end-to-end fine-tuning here: the task-aware start already puts the step where the task
needs it, and backpropagating through the server half of a language model for every step costs
minutes per beta on two CPU cores; the density is learned on the training tokens (noise proxy),
the support fitted, and beta is chosen on validation.

Data: WikiText-2 *valid* (first 3/4 of its windows train, last 1/4 chooses), *test* reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.nn import functional as F

from aiflow_cli.codecs import make_codec
from aiflow_cli.codecs.learned import (
    BottleneckNet,
    LearnedBottleneckCodec,
    step_for_beta,
)
from aiflow_cli.errors import InputError
from aiflow_cli.models.segmented import SegmentedModel
from aiflow_cli.schemas.bottleneck import DataSplit
from aiflow_cli.schemas.text_bottleneck import (
    TextBottleneckReport,
    TextOperatingPoint,
    TextRatePoint,
    TextScores,
)
from aiflow_cli.split.bottleneck.api import interpolate_bytes_at
from aiflow_cli.split.bottleneck.baselines import UniformQuantizer
from aiflow_cli.split.bottleneck.defaults import TEXT_BETAS, TEXT_MIN_FIDELITY
from aiflow_cli.stats import clustered_mean

__all__ = ["TEXT_TASKS", "TEXT_SPLIT_RULE", "TextPart", "TextData", "text_data", "text_fisher", "train_text_codec",
           "run_text_bottleneck", "cheapest_within", "default_text_betas", "default_min_fidelity", "tokens_as_images"]

TEXT_TASKS = {"causal-lm": "next-token", "sentence-embedding": "sentence-embedding"}
TEXT_SPLIT_RULE = ("WikiText-2: valid, first 3/4 of the windows train the codec, last 1/4 chooses (validation); "
                   "test reports")
UNIFORM_STEPS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
WINDOW = 128
_COUNTS = {"next-token": (160, 40), "sentence-embedding": (400, 200)}  # windows from valid, from test

Progress = Callable[[str, int, int], None]


def default_text_betas(model: SegmentedModel) -> tuple[float, ...]:
    return TEXT_BETAS[TEXT_TASKS[model.task]]


def default_min_fidelity(model: SegmentedModel) -> float:
    return TEXT_MIN_FIDELITY[TEXT_TASKS[model.task]]


def tokens_as_images(h: torch.Tensor) -> torch.Tensor:
    """(1, T, D) hidden states -> (T, D, 1, 1): each token one input of the image codec."""
    return h.reshape(-1, h.shape[-1])[:, :, None, None]


@dataclass
class TextPart:
    """Windows of one part of the data at the cut, with what the unsplit model answered."""

    hidden: list[torch.Tensor]  # per window (1, T, D)
    masks: list[torch.Tensor | None]  # encoder: (1, T) attention mask; causal LM: None
    reference: list[torch.Tensor]  # causal LM: (T, V) bfloat16 log-probs; encoder: (1, E) embedding

    @property
    def tokens(self) -> int:
        return sum(h.shape[1] for h in self.hidden)


@dataclass
class TextData:
    model: SegmentedModel
    cut: str
    task: str  # next-token | sentence-embedding
    train: TextPart
    validation: TextPart
    test: TextPart
    roots: list[str] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.model.cut_index(self.cut) + 1

    def server(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The server half (differentiable): logits (1, T, V) or the normalised embedding (1, E)."""
        x = hidden if mask is None else (hidden, mask)
        for seg in self.model.segments[self.start:]:
            x = seg.module(x)
        return x


def _windows(model: SegmentedModel, task: str, split: str, count: int) -> list[dict[str, torch.Tensor]]:
    from aiflow_cli.data.text import wikitext_path, wikitext_sentences

    path = wikitext_path(split)  # type: ignore[arg-type]
    if not path.is_file():
        raise InputError(f"{path}: not found", "text bottlenecks train on WikiText-2 valid and report on test "
                         "(../shared/data/wikitext-2, or set AIFLOW_DATA)")
    tok = model.tokenizer
    if task == "sentence-embedding":
        lines = wikitext_sentences(split, count) or []  # type: ignore[arg-type]
        return [dict(tok(s, return_tensors="pt", truncation=True, max_length=WINDOW)) for s in lines]
    ids = tok(path.read_text(encoding="utf-8")[: count * WINDOW * 6], return_tensors="pt")["input_ids"][0]
    return [{"input_ids": ids[i:i + WINDOW][None]} for i in range(0, len(ids) - WINDOW + 1, WINDOW)][:count]


@torch.no_grad()
def _part(data: TextData, windows: list[dict[str, torch.Tensor]], keep_reference: bool) -> TextPart:
    hidden, masks, refs = [], [], []
    for w in windows:
        mask = w.get("attention_mask")
        x = w["input_ids"] if mask is None else (w["input_ids"], mask)
        h = data.model.run_chain(x, 0, data.start)
        h = h if mask is None else h[0]
        hidden.append(h)
        masks.append(mask)
        if keep_reference:
            out = data.server(h, mask)
            refs.append(F.log_softmax(out[0], -1).to(torch.bfloat16) if mask is None else out)
    return TextPart(hidden, masks, refs)


def text_data(model: SegmentedModel, cut: str, counts: tuple[int, int] | None = None,
              progress: Progress | None = None) -> TextData:
    """Hidden states at ``cut`` for the three parts; the unsplit outputs for validation and test."""
    from aiflow_cli.data.text import wikitext_path

    if model.task not in TEXT_TASKS:
        raise InputError(f"{model.name} is a {model.task} model; the text bottleneck needs a causal LM or a "
                         "sentence encoder", "use zoo:smollm2-135m or zoo:minilm-l6")
    index = model.cut_index(cut)
    if index == 0 or not cut.startswith("layer"):
        raise InputError(f"cut '{cut}' of {model.name} is not after a transformer layer",
                         "choose a layer cut, e.g. --cut layer15 (SmolLM2) or --cut layer4 (MiniLM)")
    task = TEXT_TASKS[model.task]
    n_valid, n_test = counts or _COUNTS[task]
    state = model.extras.get("kv_state")
    if state is not None:
        state.clear()  # cache-free forward over whole windows
    valid = _windows(model, task, "valid", n_valid)
    test = _windows(model, task, "test", n_test)
    if len(valid) < 4 or not test:
        raise InputError(f"{wikitext_path('valid').parent}: too little text for a train / validation / test split",
                         "WikiText-2 valid.txt and test.txt are needed whole")
    data = TextData(model, cut, task, TextPart([], [], []), TextPart([], [], []), TextPart([], [], []),
                    [str(wikitext_path("test").parent)])
    split = len(valid) * 3 // 4
    for n, (name, windows, keep) in enumerate((("train", valid[:split], False), ("validation", valid[split:], True),
                                               ("test", test, True))):
        setattr(data, name, _part(data, windows, keep))
        if progress:
            progress(f"features at {cut}", n + 1, 3)
    return data


def text_fisher(data: TextData, windows: int = 16, samples: int = 2, seed: int = 0) -> torch.Tensor:
    """(D, D): E over tokens of g g^T, g = the gradient of the task's output at one token's hidden state.

    Causal LM: g = d sum_t log p(y~_t) / dh with y~ drawn from the model's own prediction (the
    Fisher information, the Hessian of the KL). Encoder: g = d (v . e) / dh with v ~ N(0, I), whose
    expectation E[g g^T] = J^T J is the Hessian of |e_hat - e|^2 / 2 (= 1 - cos for unit vectors).
    """
    gen = torch.Generator().manual_seed(seed)
    part = data.train
    d = part.hidden[0].shape[-1]
    fisher = torch.zeros(d, d, dtype=torch.float64)
    count = min(windows if data.task == "next-token" else windows * 10, len(part.hidden))
    for h, mask in list(zip(part.hidden, part.masks))[:count]:
        x = h.clone().requires_grad_(True)
        out = data.server(x, mask)
        if data.task == "next-token":
            logp = F.log_softmax(out, -1)
            probs = logp.detach().exp()[0]
        for s in range(samples):
            if data.task == "next-token":
                y = torch.multinomial(probs, 1, generator=gen)
                objective = logp[0].gather(1, y).sum()
            else:
                objective = (out * torch.randn(out.shape, generator=gen)).sum()
            (g,) = torch.autograd.grad(objective, x, retain_graph=s < samples - 1)
            g = g.reshape(-1, d).double()
            fisher += g.T @ g
    # the loss is per token for a causal LM (beta: nats of next-token KL per bit) and per sentence
    # for an encoder (beta: squared embedding error per bit of the sentence's message)
    units = sum(h.shape[1] for h in part.hidden[:count]) if data.task == "next-token" else count
    return fisher / (units * samples)


def train_text_codec(train: TextPart, fisher: torch.Tensor, beta: float, warmup_steps: int = 400,
                     batch: int = 256, seed: int = 0) -> LearnedBottleneckCodec:
    """Task-aware transform at the step for ``beta``, then the density learned on the training tokens."""
    torch.manual_seed(seed)
    x = torch.cat([tokens_as_images(h) for h in train.hidden])
    net = BottleneckNet(x.shape[1], x.shape[1], 1)
    net.init_task_aware(x, fisher, step_for_beta(beta))
    with torch.no_grad():
        latents = net.encode(x)
    opt = torch.optim.Adam(net.density_parameters(), lr=1e-2)
    for _ in range(warmup_steps):
        z = latents[torch.randint(0, len(latents), (batch,))]
        rate = -torch.log2(net.likelihood(z + torch.empty_like(z).uniform_(-0.5, 0.5))).sum() / batch
        opt.zero_grad(set_to_none=True)
        rate.backward()
        opt.step()
    net.fit_support([x])
    return LearnedBottleneckCodec(net.eval())


Roundtrip = Callable[[torch.Tensor], tuple[torch.Tensor, int]]


@torch.no_grad()
def _measure(data: TextData, part: TextPart, roundtrip: Roundtrip) -> tuple[TextScores, float]:
    """(scores against the unsplit model, coded bytes per token): every window is one message."""
    sums, counts, kls, nbytes = [], [], [], 0
    for h, mask, ref in zip(part.hidden, part.masks, part.reference):
        back, size = roundtrip(h)
        nbytes += size
        out = data.server(back, mask)
        if data.task == "next-token":
            logp, ref = F.log_softmax(out[0], -1), ref.float()
            sums.append(float((logp.argmax(-1) == ref.argmax(-1)).sum()))
            counts.append(h.shape[1])
            kls.append(float((ref.exp() * (ref - logp)).sum()))
        else:
            sums.append(float(F.cosine_similarity(out, ref).mean()))
            counts.append(1)
    fidelity = clustered_mean(sums, counts)
    if data.task == "next-token":
        return TextScores(fidelity=fidelity, kl=round(sum(kls) / sum(counts), 6)), nbytes / part.tokens
    return TextScores(fidelity=fidelity, worst=round(min(sums), 6)), nbytes / part.tokens


def _point(data: TextData, codec: str, roundtrip: Roundtrip, **extra) -> TextRatePoint:  # noqa: ANN003
    val, val_bytes = _measure(data, data.validation, roundtrip)
    test, test_bytes = _measure(data, data.test, roundtrip)
    return TextRatePoint(codec=codec, bytes_per_token=round(test_bytes, 3), validation_bytes_per_token=round(val_bytes, 3),
                         validation=val, test=test, **extra)


def _tokens_roundtrip(quantizer: UniformQuantizer) -> Roundtrip:
    def run(h: torch.Tensor) -> tuple[torch.Tensor, int]:
        back, size = quantizer.roundtrip(tokens_as_images(h))
        return back.reshape(h.shape), size
    return run


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def cheapest_within(points: list[TextRatePoint], floor: float) -> tuple[TextRatePoint, bool]:
    """Fewest validation bytes whose validation fidelity reaches ``floor`` with its whole 95%
    interval (the estimate alone would pick points that test a hair below ``floor`` half the
    time); else the most faithful."""
    ok = [p for p in points if p.validation.fidelity.ci95[0] >= floor]
    if ok:
        return min(ok, key=lambda p: p.validation_bytes_per_token), True
    return max(points, key=lambda p: p.validation.fidelity.value), False


def run_text_bottleneck(model: SegmentedModel, cut: str, betas: list[float], min_fidelity: float,
                        counts: tuple[int, int] | None = None, uniform_steps: tuple[float, ...] = UNIFORM_STEPS,
                        progress: Progress | None = None
                        ) -> tuple[TextBottleneckReport, dict[float, LearnedBottleneckCodec]]:
    """Train one codec per beta at ``cut``, measure it and the baselines on validation and test, choose."""
    data = text_data(model, cut, counts, progress)
    fisher = text_fisher(data)
    points, codecs = [], {}
    for n, beta in enumerate(betas):
        t0 = time.perf_counter()
        codec = train_text_codec(data.train, fisher, beta)
        seconds = time.perf_counter() - t0
        codecs[beta] = codec
        points.append(_point(data, "learned", codec.roundtrip, beta=beta, train_seconds=round(seconds, 2)))
        if progress:
            progress("train + measure", n + 1, len(betas))
    baselines = []
    for name in ("fp16", "int8-channel+zstd"):
        plain = make_codec(name)
        plain.calibrate([h[0] for h in data.train.hidden])
        baselines.append(_point(data, name.replace("-channel+zstd", "-zstd"), plain.roundtrip))
    train_x = torch.cat([tokens_as_images(h) for h in data.train.hidden])
    uniform = [_point(data, f"uniform-q{step:g}", _tokens_roundtrip(UniformQuantizer(train_x, step, robust=True)), step=step)
               for step in uniform_steps]
    baselines += uniform
    chosen, ok = cheapest_within(points, min_fidelity)
    uni, uni_ok = cheapest_within(uniform, min_fidelity)
    int8, fp16 = baselines[1], baselines[0]
    op = TextOperatingPoint(
        beta=chosen.beta, meets_min_fidelity_on_validation=ok, test_bytes_per_token=chosen.bytes_per_token,
        test_fidelity=chosen.test.fidelity, int8_zstd_bytes_per_token=int8.bytes_per_token,
        ratio_to_int8_zstd=round(chosen.bytes_per_token / int8.bytes_per_token, 4),
        fp16_bytes_per_token=fp16.bytes_per_token,
        uniform_step=uni.step if uni_ok else None, uniform_bytes_per_token=uni.bytes_per_token if uni_ok else None,
        uniform_test_fidelity=uni.test.fidelity if uni_ok else None,
        ratio_to_uniform=round(chosen.bytes_per_token / uni.bytes_per_token, 4) if uni_ok else None,
        uniform_bytes_at_equal_fidelity=_round(interpolate_bytes_at(
            [(p.bytes_per_token, p.test.fidelity.value) for p in uniform], chosen.test.fidelity.value)))
    task = data.task
    report = TextBottleneckReport(
        model=model.spec, cut=cut, task=task, min_fidelity=min_fidelity,
        fidelity=("next-token top-1 agreement with the unsplit model" if task == "next-token"
                  else "cosine of the sentence embedding to the unsplit model's"),
        hidden_size=int(data.train.hidden[0].shape[-1]),
        data=DataSplit(roots=data.roots, rule=TEXT_SPLIT_RULE, train_inputs=len(data.train.hidden),
                       validation_inputs=len(data.validation.hidden), test_inputs=len(data.test.hidden)),
        train_tokens=data.train.tokens, validation_tokens=data.validation.tokens, test_tokens=data.test.tokens,
        points=points, baselines=baselines, operating_point=op)
    return report, codecs
