"""The speculative-decoding study: TPOT against the draft length k over emulated links, with the
baselines measured in the same run on the same prompts, and the cost model beside each point.

The server (the target) runs in its own process pinned to one core with one thread; this process
is the device (the draft), pinned to another core with one thread, and runs the link proxy.

The prediction is built from costs measured apart, before the runs (``CostProbe``): the draft's
time per token alone, the server's own time for a verification pass of k drafts, the protocol
stack's time on loopback, plus the link's RTT and the bytes of each round at its rate. It is
divided by the tokens per round the run measured (acceptance is an input of the model, not a
prediction). A point whose prediction misses by more than 15% shows a cost the model lacks.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from aiflow_cli import __version__
from aiflow_cli.data.specbench import Prompt, read_prompts
from aiflow_cli.errors import InputError
from aiflow_cli.models.speculative import (
    AutoK,
    Drafter,
    KVSession,
    LocalVerifier,
    Rounds,
    decode_alone,
    speculate,
)
from aiflow_cli.schemas.spec_study import CostProbe, LinkBaseline, SpecStudy, StudyPoint
from aiflow_cli.serve.device.client import V2Client
from aiflow_cli.serve.device.speculative import (
    RemoteVerifier,
    SpeculativeDevice,
    server_only,
)
from aiflow_cli.serve.launch import ServerProcess, free_port
from aiflow_cli.serve.link.proxy import LinkShape, start_link_thread
from aiflow_cli.serve.protocol import InferRequest, encode_infer_response
from aiflow_cli.serve.studies.bench import BenchLink

__all__ = ["run_spec_study", "PREDICTION_LIMIT"]

PREDICTION_LIMIT = 0.15
COLOCATED_K_MAX = 8  # the co-located baseline at small k only: it has no link, its best k is small
Progress = Callable[[str, int, int], None]


def _decode_phase(rounds: Rounds) -> tuple[float, int, int]:
    """(ms, tokens, rounds) after the first round (which carries the prompt)."""
    produced = [a + 1 for a in rounds.accepted]
    ms = sum(rounds.draft_ms[1:]) + sum(rounds.verify_ms[1:])
    return ms, min(len(rounds.tokens), sum(produced)) - produced[0], len(produced) - 1


def _probe(device: SpeculativeDevice, client: V2Client, draft: KVSession, prompt: list[int], ks: list[int],
           repeats: int = 5) -> CostProbe:
    """Costs measured on a direct (unshaped) connection."""
    tokens = decode_alone(draft, prompt, 33)  # also warms the session up (its first runs allocate)
    draft.reset()
    draft.feed(prompt)
    steps = []
    for token in tokens[:32]:
        t0 = time.perf_counter()
        draft.feed([token])
        steps.append((time.perf_counter() - t0) * 1e3)
    draft_per_token = statistics.median(steps)
    verify_ms, stack = {}, []
    for k in sorted(set(ks) | {1}):
        times = []
        for r in range(-1, repeats):  # r = -1: an untimed warm-up at this shape
            verifier = RemoteVerifier(client, device.model, session=f"probe-{k}-{r}")
            verifier.verify(prompt, [], [], [])  # the prompt, then a round of k drafts on top
            t0 = time.perf_counter()
            verifier.verify(prompt + [tokens[0]], tokens[1:1 + k], [], [])
            total = (time.perf_counter() - t0) * 1e3
            if r >= 0:
                times.append(verifier.stats.server_ms[-1])
                stack.append(total - verifier.stats.server_ms[-1])
        verify_ms[k] = statistics.median(times)
    tensors = {"input_ids": np.asarray([[tokens[0], *tokens[1:5]]], dtype=np.int64)}
    params = {"position": len(prompt), "draft_count": 4}
    header = client.request_bytes(tensors, ["accepted", "next_token"], "0123456789abcdef-100",
                                  sequence_id="0123456789abcdef", parameters=params) - tensors["input_ids"].nbytes
    answer = InferRequest(id="0123456789abcdef-100", parameters={}, tensors={},
                          binary_outputs={"accepted": True, "next_token": True})
    body, _ = encode_infer_response(device.model, answer, {"accepted": np.zeros(1, np.int64),
                                                           "next_token": np.zeros(1, np.int64)},
                                    {"aiflow_server_ms": 12.3456, "position": 100})
    return CostProbe(draft_ms_per_token=draft_per_token, verify_ms=verify_ms, stack_ms=statistics.median(stack),
                     request_header_bytes=header, response_bytes=len(body))


ITEMS = ("draft", "server", "server_pass", "stack_link", "device_other")


def _itemise(rounds: Rounds, stats, parts: dict[str, list[float]]) -> None:  # noqa: ANN001 - RemoteStats
    """Append each decode round's measured components (ms) to ``parts``. A round whose request was
    resent (a lost session) is left out: its trip and the server's figures would not line up."""
    if stats.resent_prefixes:
        return
    n = len(rounds.accepted) - 1
    for i in range(1, 1 + n):
        if i >= len(stats.trip_ms):
            break
        parts["draft"].append(rounds.draft_ms[i])
        parts["server"].append(stats.server_ms[i])
        parts["server_pass"].append(stats.pass_ms[i])
        parts["stack_link"].append(stats.trip_ms[i] - stats.server_ms[i])
        parts["device_other"].append(rounds.verify_ms[i] - stats.trip_ms[i])


def _itemised(parts: dict[str, list[float]], probe: CostProbe, link: BenchLink, ks: list[int],
              request_bytes: list[int]) -> dict[str, list[float]]:
    """{component: [measured mean, cost model mean]} per decode round."""
    predicted = {
        "draft": float(np.mean([k * probe.draft_ms_per_token for k in ks])) if ks else 0.0,
        "server": float(np.mean([_verify_at(probe, k) for k in ks])) if ks else 0.0,
        "server_pass": 0.0,  # inside "server": the probe times the server's whole handling, not the pass apart
        "stack_link": float(np.mean([probe.stack_ms + link.rtt_ms + (b + probe.request_header_bytes
                                     + probe.response_bytes) / link.rate * 1e3 for b in request_bytes]))
        if request_bytes else 0.0,
        "device_other": 0.0,
    }
    return {n: [round(float(np.mean(parts[n])), 3) if parts[n] else 0.0, round(predicted[n], 3)] for n in ITEMS}


def _verify_at(probe: CostProbe, k: float) -> float:
    ks = sorted(probe.verify_ms)
    return float(np.interp(k, ks, [probe.verify_ms[x] for x in ks]))


def _predict(probe: CostProbe, link: BenchLink, ks: list[int], request_bytes: list[int],
             tokens_per_round: float, ahead_used: float | None = None) -> float:
    """Predicted decode-phase ms per token for rounds of ``ks`` drafts whose requests carried ``request_bytes``.

    A round: k drafts, then the round trip (verify(k) + serving stack + RTT + bytes / rate). With
    overlap (``ahead_used``: the measured share of rounds that start with their block drafted) the
    device drafts k + 1 tokens during the trip, so a round costs (1 - ahead_used) k draft +
    max(trip, (k + 1) draft)."""
    d = probe.draft_ms_per_token
    per_round = []
    for k, b in zip(ks, request_bytes):
        trip = _verify_at(probe, k) + probe.stack_ms + link.rtt_ms \
            + (b + probe.request_header_bytes + probe.response_bytes) / link.rate * 1e3
        per_round.append(k * d + trip if ahead_used is None else (1 - ahead_used) * k * d + max(trip, (k + 1) * d))
    return float(np.mean(per_round)) / tokens_per_round


def run_spec_study(directory: Path, links: list[BenchLink], ks: list[int], prompt_count: int = 8,
                   new_tokens: int = 32, prompt_tokens: int = 64, auto: bool = True, k_max: int = 24,
                   cores: tuple[int, int] = (0, 1), overlap: bool = False, progress: Progress | None = None
                   ) -> SpecStudy:
    device = SpeculativeDevice(directory, threads=1)
    tokenizer = device.tokenizer()
    prompts: list[Prompt] = read_prompts(prompt_count)
    ids = [tokenizer(p.text)["input_ids"][:prompt_tokens] for p in prompts]
    eos = set(device.info.eos_ids)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cores[0]})
    draft = device.draft_session()
    target_here = KVSession.open(directory / device.pair.server.file, device.pair.server.inputs, threads=1)

    # device-only and co-located (no link)
    reference = [decode_alone(target_here, p, new_tokens, eos=eos) for p in ids]
    alone = []
    t0 = time.perf_counter()
    for p in ids:
        alone.append(decode_alone(draft, p, new_tokens, eos=eos))
    device_only = (time.perf_counter() - t0) * 1e3 / sum(map(len, alone))
    agreement = float(np.mean([np.mean([a == b for a, b in zip(x, y)]) for x, y in zip(alone, reference)]))
    colocated = {}
    for k in [k for k in ks if k <= COLOCATED_K_MAX] or ks[:1]:
        ms, toks = 0.0, 0
        for p in ids:
            draft.reset()
            target_here.reset()
            r = speculate(Drafter(draft), LocalVerifier(target_here), p, new_tokens, k, eos)
            m, t, _ = _decode_phase(r)
            ms, toks = ms + m, toks + t
        colocated[k] = ms / max(1, toks)
    del target_here

    port = free_port()
    server = ServerProcess(Path(directory), port, cores=[cores[1]], threads=1)
    points: list[StudyPoint] = []
    baselines: list[LinkBaseline] = []
    try:
        server.wait_ready()
        direct = V2Client(f"127.0.0.1:{port}")
        probe = _probe(device, direct, draft, ids[0], ks)
        direct.close()
        variants: list[tuple[int | str, bool]] = [(k, False) for k in [*ks, *(["auto"] if auto else [])]]
        if overlap:
            variants += [(k, True) for k in ks]
        total = len(links) * (len(variants) + 1)
        step = 0
        for link in links:
            proxy, _ = start_link_thread(("127.0.0.1", port), LinkShape(link.rate, link.rtt_ms / 2),
                                         LinkShape(link.rate, link.rtt_ms / 2))
            client = V2Client(f"127.0.0.1:{proxy.port}", timeout_s=120)
            try:
                device.generate(client, ids[0], 4, 2, draft=draft)  # warm the connection and both caches
                one = [server_only(client, device.model, p, 1)[1] for p in ids]
                full = [server_only(client, device.model, p, new_tokens) for p in ids]
                per_token = [(s - o) * 1e3 / max(1, len(t) - 1) for (t, s), o in zip(full, one)]
                baselines.append(LinkBaseline(link=link.name, server_only_tpot_ms=float(np.mean(per_token))))
                step += 1
                if progress:
                    progress("study", step, total)
                for k, ahead in variants:
                    auto_policy = AutoK(k_max)  # one policy per link, learning across the prompts
                    ms, toks, rounds_n, kk, req, used = 0.0, 0, 0, [], [], 0
                    parts: dict[str, list[float]] = {n: [] for n in ITEMS}
                    by_category: dict[str, list[int]] = {}
                    chosen: list[int] = []
                    for prompt, p in zip(prompts, ids):
                        policy = auto_policy if k == "auto" else int(k)
                        r, stats = device.generate(client, p, new_tokens, policy, draft=draft, overlap=ahead)
                        used += r.ahead_used
                        _itemise(r, stats, parts)
                        m, t, n = _decode_phase(r)
                        ms, toks, rounds_n = ms + m, toks + t, rounds_n + n
                        kk += r.proposed[1:]
                        req += stats.request_bytes[1:1 + n]
                        acc = by_category.setdefault(prompt.category, [0, 0])
                        acc[0] += sum(r.accepted)
                        acc[1] += sum(r.proposed)
                        if k == "auto":
                            chosen += r.proposed
                    if rounds_n == 0 or toks == 0:
                        raise InputError(f"k={k} over {link.name}: every generation ended in its first round (the "
                                         "one that carries the prompt), so no decoding round was left to time",
                                         "raise --new-tokens or --prompts")
                    tokens_per_round = toks / max(1, rounds_n)
                    tpot = ms / max(1, toks)
                    ahead_used = used / max(1, rounds_n)
                    predicted = _predict(probe, link, kk, req, tokens_per_round, ahead_used if ahead else None)
                    accepted = sum(a for a, _ in by_category.values())
                    proposed = sum(b for _, b in by_category.values())
                    points.append(StudyPoint(
                        link=link.name, k=k, prompts=len(ids), tokens=toks, tpot_ms=tpot, predicted_tpot_ms=predicted,
                        error=predicted / tpot - 1, tokens_per_round=tokens_per_round,
                        acceptance=accepted / max(1, proposed),
                        acceptance_by_category={c: a / max(1, b) for c, (a, b) in sorted(by_category.items())},
                        request_bytes_per_round=float(np.mean(req)) if req else 0.0, ks_chosen=chosen[:200],
                        overlap=ahead, ahead_used=ahead_used,
                        itemised=_itemised(parts, probe, link, kk, req)))
                    step += 1
                    if progress:
                        progress("study", step, total)
            finally:
                client.close()
                proxy.stop()
    finally:
        server.stop()
    best_k, crossover, best_k_overlap = {}, {}, {}
    for link, base in zip(links, baselines):
        with_overlap = [p for p in points if p.link == link.name and p.overlap]
        if with_overlap:
            best_k_overlap[link.name] = int(min(with_overlap, key=lambda p: p.tpot_ms).k)
        fixed = sorted((p for p in points if p.link == link.name and p.k != "auto" and not p.overlap),
                       key=lambda p: int(p.k))
        best = min(fixed, key=lambda p: p.tpot_ms)
        best_k[link.name] = int(best.k)
        crossover[link.name] = next((int(p.k) for p in fixed if int(p.k) > int(best.k)
                                     and p.tpot_ms > base.server_only_tpot_ms), None)
    manifest = device.manifest
    return SpecStudy(aiflow_version=__version__, export=str(directory), draft=manifest.speculative.draft_model.spec,
                     target=manifest.source_model.spec, machine=f"{platform.machine()} {os.cpu_count()} cores",
                     date=datetime.date.today().isoformat(), prompts=len(ids), new_tokens=new_tokens, probe=probe,
                     device_only_tpot_ms=device_only, device_only_agreement=agreement, colocated_tpot_ms=colocated,
                     baselines=baselines, points=points, best_k=best_k, crossover_k=crossover,
                     best_k_overlap=best_k_overlap)
