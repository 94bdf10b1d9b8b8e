"""``aiflow profile``: measure every segment between consecutive cuts on this machine.

Timing runs the chain segment by segment (perf_counter around each), then the unsplit model in
a block of its own, so the sum of segment medians can be checked against a whole-model run
taken in the same command. Causal LMs are measured twice: prefill of ``seq_len`` tokens
into an empty KV cache, then one decode step on top of that cache.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from aiflow_cli.errors import InputError
from aiflow_cli.models.segmented import Segment, SegmentedModel
from aiflow_cli.profiling.counters import ForwardCounts, count_forward
from aiflow_cli.profiling.cuda import cuda_name, on_cuda, require_cuda
from aiflow_cli.profiling.host import host_info
from aiflow_cli.profiling.kernels import onnx_kernel_counts
from aiflow_cli.schemas.profile import (
    DecodeProfile,
    InputBytes,
    KernelCounts,
    Latency,
    ModelInfo,
    ProfileReport,
    SegmentProfile,
    Settings,
    Stability,
    Totals,
)
from aiflow_cli.tensors import nbytes_of, tensors_of

__all__ = ["profile_model", "check_profile_settings", "segment_macs", "Progress", "latency_of", "unique_params",
           "assess_stability", "call_overhead_ms", "STABILITY_ADVICE"]

Progress = Callable[[str, int, int], None]

# What counts as a trustworthy timing (set from runs on this 2-core VM: quiet, segment p90/median
# 1.1-2.4 and whole 1.1; with four busy loops beside it, segments 4-47, whole 2.1 and a segment
# sum 57% below the whole).
SEGMENT_SPREAD_LIMIT = 3.0  # a segment's p90 / median
WHOLE_SPREAD_LIMIT = 1.5  # the whole model's p90 / median
DRIFT_LIMIT = 1.5  # largest / smallest whole-model median over the alternating rounds
SUM_OVER_WHOLE_RANGE = (0.75, 1.6)  # onnxruntime segments sum to ~1.3x the whole (per-call overhead)
UNSTABLE_SEGMENT_SHARE = 0.25
# This process's CPU time over the wall time of the timed runs: at least one busy core whenever it
# computes, so well under 1 means other processes held the cores. EfficientNet-Lite0 on this VM:
# quiet 0.999 (1 thread) / 1.985 (2 threads) / 1.695 (onnxruntime); beside 2 spinning processes
# 0.605 (1 thread), beside 6 0.277 (1 thread) / 0.492 (2 threads). Timing spreads alone miss a
# machine that is evenly, steadily oversubscribed (1 thread beside 1 spinner: 0.994, and stable).
ON_CPU_LIMIT = 0.7
ABSOLUTE_FLOOR_MS = 0.05  # below this, a spread is timer noise, not contention
STABILITY_ADVICE = "re-run on a quiet machine, with --threads 1 and more --repeats"


def latency_of(seconds: list[float], spread_limit: float = SEGMENT_SPREAD_LIMIT) -> Latency:
    ms = sorted(s * 1e3 for s in seconds)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    median = statistics.median(ms)
    stable = p90 <= spread_limit * median + ABSOLUTE_FLOOR_MS
    return Latency(median=round(median, 4), p90=round(p90, 4), stable=stable)


def assess_stability(whole: Latency, segments: list[Latency], round_medians: list[float],
                     on_cpu_share: float | None = None) -> Stability:
    """Flag timings that a busy machine has spoiled, with one warning line per symptom.

    ``on_cpu_share`` is this process's CPU time over the timed wall time (None on a GPU, where the
    host thread waits by design)."""
    warnings = []
    if on_cpu_share is not None and on_cpu_share < ON_CPU_LIMIT:
        warnings.append(f"this process was on a core for only {on_cpu_share:.0%} of the timed runs "
                        f"(limit {ON_CPU_LIMIT:.0%}): other processes held the cores")
    spread = whole.p90 / whole.median if whole.median else 1.0
    if not whole.stable:
        warnings.append(f"whole-model p90 is {spread:.1f}x its median (limit {WHOLE_SPREAD_LIMIT:g}x)")
    drift = max(round_medians) / min(round_medians) if len(round_medians) > 1 and min(round_medians) > 0 else 1.0
    if drift > DRIFT_LIMIT:
        warnings.append(f"whole-model median drifted {drift:.1f}x between rounds (limit {DRIFT_LIMIT:g}x)")
    total = sum(s.median for s in segments)
    ratio = total / whole.median if whole.median else 1.0
    lo, hi = SUM_OVER_WHOLE_RANGE
    if not lo <= ratio <= hi:
        warnings.append(f"segment medians sum to {ratio:.2f}x the whole model (expected {lo:g}-{hi:g}x)")
    unstable = sum(not s.stable for s in segments)
    if unstable > UNSTABLE_SEGMENT_SHARE * len(segments):
        warnings.append(f"{unstable} of {len(segments)} segments have p90 above {SEGMENT_SPREAD_LIMIT:g}x their median")
    return Stability(stable=not warnings, whole_p90_over_median=round(spread, 3), round_drift=round(drift, 3),
                     sum_over_whole=round(ratio, 3), unstable_segments=unstable,
                     on_cpu_share=None if on_cpu_share is None else round(on_cpu_share, 3), warnings=warnings)


def call_overhead_ms(segment_medians: list[float], whole_median: float) -> float:
    """Per-call cost from the profile itself: n segment calls cost n - 1 overheads more than one
    whole-model call over the same work (runtime call, thread-pool wake-up, boundary fusions)."""
    if len(segment_medians) < 2:
        return 0.0
    return round(max(0.0, (sum(segment_medians) - whole_median) / (len(segment_medians) - 1)), 4)


def unique_params(module: torch.nn.Module) -> tuple[int, int]:
    """(parameter count, weight bytes) counting shared tensors once; ONNX segments count initializers."""
    proto = getattr(module, "proto", None)
    if proto is not None:
        from onnx import numpy_helper

        arrays = [numpy_helper.to_array(init) for init in proto.graph.initializer]
        floats = [a for a in arrays if a.dtype.kind == "f"]
        return sum(a.size for a in floats), sum(a.nbytes for a in floats)
    seen: dict[int, torch.Tensor] = {}
    for p in module.parameters():
        seen.setdefault(id(p), p)
    return sum(p.numel() for p in seen.values()), sum(p.numel() * p.element_size() for p in seen.values())


def _input_bytes(model: SegmentedModel, x: Any) -> InputBytes:
    raw = nbytes_of(x)
    if model.task == "image-classification":
        from aiflow_cli.data.imagenet import (
            imagenet_sample_dir,
            jpeg_bytes,
            read_labels,
        )

        if (imagenet_sample_dir() / "labels.csv").is_file():
            # median over a fixed slice of the sample, times the batch: one photo is not typical
            sizes = [jpeg_bytes(r.path, quality=90) for r in read_labels()[::14]]
            return InputBytes(raw=raw, jpeg_q90=int(statistics.median(sizes)) * tensors_of(x)[0].shape[0])
        return InputBytes(raw=raw, jpeg_q90=_jpeg_of_tensor(tensors_of(x)[0]))
    if model.task in ("causal-lm", "sentence-embedding") or model.default_seq_len:
        ids = tensors_of(x)[0]
        return InputBytes(raw=raw, tokens=ids.numel() * 4)
    return InputBytes(raw=raw)


def _jpeg_of_tensor(images: torch.Tensor) -> int:
    import io

    import numpy as np
    from PIL import Image

    total = 0
    for img in images:
        arr = ((img.clamp(-1, 1) * 0.5 + 0.5) * 255).byte().permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="JPEG", quality=90)
        total += buf.tell()
    return total


def _time_chain(segments: list[Segment], whole: torch.nn.Module, x: Any, repeats: int, warmup: int,
                reset: Callable[[], None], progress: Progress | None, label: str
                ) -> tuple[list[list[float]], list[float], list[float], float]:
    """Per-segment times over the chain and times of the unsplit model, taken in alternating rounds.

    Each round times a few chain runs, then a few whole-model runs, each block after one untimed run
    of its own. Blocks keep the whole model's weights warm when segments hold their own copies of the
    weights (onnxruntime); alternating rounds spread a noisy neighbour or a clock change over both
    sides instead of letting it land on one, so the sum of segment medians and the whole-model median
    can be compared on a shared machine. Also returns the whole model's median per round (drift)
    and this process's CPU time over the wall time of all timed runs (contention).
    """
    seg_times: list[list[float]] = [[] for _ in segments]
    whole_times: list[float] = []
    round_medians: list[float] = []
    cpu_and_wall = [0.0, 0.0]
    rounds = _round_sizes(repeats)
    total = 2 * (warmup + repeats + len(rounds))
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(label, done, total)

    def run_chain(timed: bool) -> None:
        reset()
        h = x
        c0, w0 = time.process_time(), time.perf_counter()
        for i, seg in enumerate(segments):
            t0 = time.perf_counter()
            h = seg.module(h)
            if timed:
                seg_times[i].append(time.perf_counter() - t0)
        if timed:
            cpu_and_wall[0] += time.process_time() - c0
            cpu_and_wall[1] += time.perf_counter() - w0
        tick()

    def run_whole(timed: bool) -> None:
        reset()
        c0, t0 = time.process_time(), time.perf_counter()
        whole(x)
        if timed:
            whole_times.append(time.perf_counter() - t0)
            cpu_and_wall[0] += time.process_time() - c0
            cpu_and_wall[1] += whole_times[-1]
        tick()

    with torch.no_grad():
        for _ in range(warmup):
            run_chain(False)
        for _ in range(warmup):
            run_whole(False)
        for size in rounds:
            run_chain(False)
            for _ in range(size):
                run_chain(True)
            run_whole(False)
            for _ in range(size):
                run_whole(True)
            round_medians.append(statistics.median(whole_times[-size:]) * 1e3)
    cpu, wall = cpu_and_wall
    return seg_times, whole_times, round_medians, cpu / wall if wall > 0 else 1.0


def _round_sizes(repeats: int, max_rounds: int = 5) -> list[int]:
    """Split `repeats` timed runs into at most `max_rounds` near-equal rounds."""
    n = max(1, min(max_rounds, repeats // 3))
    return [repeats // n + (1 if i < repeats % n else 0) for i in range(n)]


def segment_macs(model: SegmentedModel, x: Any) -> list[int]:
    """MACs of each segment for input ``x`` (one counted pass through the chain)."""
    return [c.macs for c in _static_counts(model.segments, x, lambda: None)]


def _static_counts(segments: list[Segment], x: Any, reset: Callable[[], None]) -> list[ForwardCounts]:
    """One counted pass through the chain: output, MACs, peak bytes and kernels per segment."""
    counts = []
    reset()
    h = x
    for seg in segments:
        c = count_forward(seg.module, h)
        counts.append(c)
        h = c.out
    return counts


def _onnx_counts(segments: list[Segment], x: Any, kernels: list[KernelCounts] | None) -> list[ForwardCounts]:
    """Counts for segments run in onnxruntime; ``kernels`` from the torch trace when there is one,
    else from each segment's ONNX graph."""
    from aiflow_cli.models.onnx_source import onnx_macs

    counts = []
    h = x
    with torch.no_grad():
        for i, seg in enumerate(segments):
            shapes = {n: tuple(t.shape) for n, t in zip(seg.module.input_names, tensors_of(h))}
            macs = onnx_macs(seg.module.proto, shapes)
            h_in = h
            h = seg.module(h)
            peak = nbytes_of(h_in) + nbytes_of(h)  # lower bound: in + out (onnxruntime hides the rest)
            counts.append(ForwardCounts(h, macs, peak, kernels[i] if kernels else onnx_kernel_counts(seg.module.proto)))
    return counts


def _to_onnxruntime(model: SegmentedModel, x: Any, threads: int | None = None) -> tuple[list[Segment], torch.nn.Module]:
    """Export each torch segment and the whole model to ONNX and run them in onnxruntime."""
    from aiflow_cli.models.onnx_source import OnnxSegment
    from aiflow_cli.onnx_io import export_onnx, value_names

    if model.task == "causal-lm":
        raise InputError("--runtime onnxruntime is not available for causal LMs in profile",
                         "use --runtime torch; aiflow split exports KV-cached ONNX pairs")
    segments, h = [], x
    for seg in model.segments:
        out = seg.module(h)
        proto = export_onnx(seg.module, h, value_names("in", h), value_names("out", out))
        segments.append(Segment(seg.name, OnnxSegment(proto, threads)))
        h = out
    out = model.whole(x)
    whole = OnnxSegment(export_onnx(model.whole, x, value_names("in", x), value_names("out", out)), threads)
    return segments, whole


def _shapes(value: Any) -> list[list[int]]:
    return [list(t.shape) for t in tensors_of(value)]


def check_profile_settings(batch: int, seq_len: int | None, repeats: int, warmup: int, runtime: str,
                           threads: int | None = None, on: str = "cpu") -> None:
    """Reject bad values before anything slow happens."""
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    if seq_len is not None and seq_len < 1:
        raise InputError(f"--seq-len must be at least 1, got {seq_len}")
    if repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise InputError(f"--warmup must be 0 or more, got {warmup}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    if runtime not in ("torch", "onnxruntime", "cuda-graph"):
        raise InputError(f"--runtime must be torch, onnxruntime or cuda-graph, got '{runtime}'")
    if on not in ("cpu", "cuda"):
        raise InputError(f"--on must be cpu or cuda, got '{on}'")
    if runtime == "cuda-graph" and on != "cuda":
        raise InputError("--runtime cuda-graph needs --on cuda", "pass --on cuda, or --runtime torch")
    if runtime == "onnxruntime" and on == "cuda":
        raise InputError("--on cuda times PyTorch (--runtime torch for eager, cuda-graph for captured graphs)",
                         "onnxruntime runs on the CPU here")


@torch.no_grad()
def profile_model(model: SegmentedModel, batch: int = 1, seq_len: int | None = None, runtime: str = "torch",
                  repeats: int = 20, warmup: int = 3, progress: Progress | None = None,
                  threads: int | None = None, on: str = "cpu") -> ProfileReport:
    """Measure every segment. ``threads`` limits torch and onnxruntime intra-op threads (default: all);
    ``on="cuda"`` times the segments on the GPU (eager, or ``runtime="cuda-graph"``)."""
    check_profile_settings(batch, seq_len, repeats, warmup, runtime, threads, on)
    if on == "cuda":
        require_cuda()
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _profile(model, batch, seq_len, runtime, repeats, warmup, progress, threads, on)
    finally:
        torch.set_num_threads(previous)


def _profile(model: SegmentedModel, batch: int, seq_len: int | None, runtime: str, repeats: int, warmup: int,
             progress: Progress | None, threads: int | None, on: str) -> ProfileReport:
    seq = seq_len or model.default_seq_len
    x = model.make_input(batch, seq)
    is_lm = model.task == "causal-lm"
    state = model.extras.get("kv_state")
    config = model.extras.get("config")
    fresh_cache: Callable[[], None] = (lambda: state.start(config)) if is_lm else (lambda: None)

    onnx_native = "onnx_path" in model.extras
    segments, whole = model.segments, model.whole
    if runtime == "onnxruntime" and not onnx_native:
        segments, whole = _to_onnxruntime(model, x, threads)
    elif runtime == "torch" and onnx_native:
        runtime = "onnxruntime"  # an .onnx source only runs in onnxruntime; recorded as such
    if runtime == "onnxruntime":
        traced = None if onnx_native else [c.kernels for c in _static_counts(model.segments, x, fresh_cache)]
        counts = _onnx_counts(segments, x, traced)
    else:
        counts = _static_counts(segments, x, fresh_cache)
    outs, macs, peaks = [c.out for c in counts], [c.macs for c in counts], [c.peak_bytes for c in counts]

    timed_x = x
    if on == "cuda":  # counted on the CPU above; timed on the GPU
        segments, whole, timed_x = on_cuda(model, x, graph=runtime == "cuda-graph")
    seg_times, whole_times, round_medians, on_cpu = _time_chain(segments, whole, timed_x, repeats, warmup, fresh_cache,
                                                        progress, "prefill" if is_lm else "timing")
    decode_times: list[list[float]] | None = None
    decode_whole: list[float] | None = None
    decode_macs: list[int] | None = None
    if is_lm:
        fresh_cache()
        logits = model.run_chain(x)
        next_ids = logits[:, -1:].argmax(-1)
        prefill_len = state.cache.get_seq_length()

        def back_to_prompt() -> None:
            state.cache.crop(prefill_len)

        decode_macs = [c.macs for c in _static_counts(segments, next_ids, back_to_prompt)]
        decode_times, decode_whole, _, _ = _time_chain(segments, whole, next_ids, repeats, warmup, back_to_prompt,
                                                 progress, "decode")
        state.clear()

    seg_profiles = []
    for i, seg in enumerate(model.segments):
        params, wbytes = unique_params(seg.module)
        seg_profiles.append(SegmentProfile(
            name=seg.name,
            latency_ms=latency_of(seg_times[i]),
            decode_latency_ms=latency_of(decode_times[i]) if decode_times else None,
            macs=macs[i], decode_macs=decode_macs[i] if decode_macs else None,
            params=params, weight_bytes=wbytes, peak_memory_bytes=peaks[i],
            out_bytes=nbytes_of(outs[i]), out_shapes=_shapes(outs[i]), kernels=counts[i].kernels,
        ))
    total_params, total_wbytes = unique_params(model.whole)
    whole_latency = latency_of(whole_times, WHOLE_SPREAD_LIMIT)
    medians = [s.latency_ms.median for s in seg_profiles]
    return ProfileReport(
        model=ModelInfo(spec=model.spec, name=model.name, task=model.task, fingerprint=model.fingerprint()),
        host=host_info(cuda_name() if on == "cuda" else None),
        settings=Settings(batch=batch, seq_len=seq, runtime=runtime, on=on, repeats=repeats, warmup=warmup),
        cuts=model.cuts,
        segments=seg_profiles,
        input_bytes=_input_bytes(model, x),
        total=Totals(
            macs=sum(macs), params=total_params, weight_bytes=total_wbytes,
            latency_ms_whole_model=whole_latency,
            latency_ms_sum_of_segment_medians=round(sum(medians), 4),
            decode_latency_ms_whole_model=latency_of(decode_whole, WHOLE_SPREAD_LIMIT) if decode_whole else None,
            call_overhead_ms=call_overhead_ms(medians, whole_latency.median),
        ),
        decode=DecodeProfile(prefill_tokens=seq, decode_cache_tokens=seq) if is_lm else None,
        stability=assess_stability(whole_latency, [s.latency_ms for s in seg_profiles], round_medians,
                                   None if on == "cuda" else on_cpu),
        inputs=model.describe_input(),
    )
