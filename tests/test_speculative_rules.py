"""Speculative decoding's rules on tiny synthetic models: greedy keeps the target's output, sampling
keeps the target's distribution (a chi-square test that a wrong rule fails), the sparse q on the
wire, the choice of k, and the inputs it refuses."""

from __future__ import annotations

import time
from itertools import product
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import chi2

from aiflow_cli.errors import InputError
from aiflow_cli.models.speculative import (
    AutoK,
    Drafter,
    LocalVerifier,
    Sampling,
    decode_alone,
    distribution,
    expected_tokens,
    sparse_distribution,
    speculate,
)

VOCAB = 6
P_VALUE_FLOOR = 1e-3  # reject "same distribution" below this


class BigramLM:
    """A KVSession stand-in: the logits after each token come from a table indexed by that token.
    The 'cache' is the list of tokens fed so far, cropped like a real one."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table
        self.reset()

    def reset(self) -> None:
        self.seen: list[int] = []

    @property
    def length(self) -> int:
        return len(self.seen)

    def feed(self, ids: list[int]) -> np.ndarray:
        self.seen += list(ids)
        return self.table[np.asarray(ids)]

    def crop(self, length: int) -> None:
        self.seen = self.seen[:length]


def _tables(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.normal(0, 1.5, (VOCAB, VOCAB))
    draft = target + rng.normal(0, 1.0, (VOCAB, VOCAB))  # a draft that is often, not always, right
    return target, draft


def _exact_pairs(target: np.ndarray, sampling: Sampling, last: int) -> np.ndarray:
    """P(t1, t2) under target-only sampling after ``last``."""
    p1 = distribution(target[last], sampling)
    return np.array([[p1[a] * distribution(target[a], sampling)[b] for b in range(VOCAB)] for a in range(VOCAB)])


def _sampled_pairs(sampling: Sampling, runs: int, verifier_class: type = LocalVerifier) -> np.ndarray:
    target, draft = _tables()
    counts = np.zeros((VOCAB, VOCAB))
    for seed in range(runs):
        rounds = speculate(Drafter(BigramLM(draft), sampling, seed), verifier_class(BigramLM(target), sampling, seed),
                           [0], 2, 2)
        counts[rounds.tokens[0], rounds.tokens[1]] += 1
    return counts


def _chi_square_p(counts: np.ndarray, expected_p: np.ndarray) -> float:
    expected = expected_p.reshape(-1) * counts.sum()
    keep = expected > 0
    assert counts.reshape(-1)[~keep].sum() == 0, "a token pair the target never produces was generated"
    stat = float((((counts.reshape(-1) - expected) ** 2)[keep] / expected[keep]).sum())
    return float(chi2.sf(stat, keep.sum() - 1))


@pytest.mark.parametrize("sampling", [Sampling(temperature=1.0), Sampling(temperature=0.7, top_p=0.9)],
                         ids=["t1.0", "t0.7-top-p0.9"])
def test_sampled_speculation_has_the_target_only_distribution(sampling):
    """4,000 seeds, two tokens each (the first round drafts two): the joint distribution of the two
    tokens matches target-only sampling; chi-square p-value above 1e-3."""
    counts = _sampled_pairs(sampling, 4000)
    assert _chi_square_p(counts, _exact_pairs(_tables()[0], sampling, 0)) > P_VALUE_FLOOR


def test_the_chi_square_test_catches_a_verifier_that_keeps_every_draft():
    """The negative control: a verifier that accepts every draft outputs the draft's distribution,
    and the same test rejects it."""

    class Credulous(LocalVerifier):
        def verify(self, committed, drafts, supports, probs):  # noqa: ANN001, ANN201
            return len(drafts), int(self.rng.choice(VOCAB, p=distribution(self.target.table[drafts[-1] if drafts else
                                                                                             committed[-1]],
                                                                          self.sampling)))

    sampling = Sampling(temperature=1.0)
    counts = _sampled_pairs(sampling, 4000, Credulous)
    assert _chi_square_p(counts, _exact_pairs(_tables()[0], sampling, 0)) < P_VALUE_FLOOR


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_greedy_speculation_outputs_the_targets_greedy_tokens(k):
    target, draft = _tables(1)
    for start in range(VOCAB):
        reference = decode_alone(BigramLM(target), [start], 20)
        rounds = speculate(Drafter(BigramLM(draft)), LocalVerifier(BigramLM(target)), [start], 20, k)
        assert rounds.tokens == reference
        assert sum(rounds.accepted) + len(rounds.accepted) == 20  # every round adds accepted + 1 tokens


def test_a_perfect_draft_is_always_accepted_and_a_round_adds_k_plus_one_tokens():
    target, _ = _tables(2)
    rounds = speculate(Drafter(BigramLM(target)), LocalVerifier(BigramLM(target)), [0], 15, 4)
    assert rounds.accepted == [4, 4, 4] and rounds.acceptance == 1.0


def test_the_draft_distribution_on_the_wire_is_the_top_p_set_in_six_bytes_per_entry():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    ids, probs = sparse_distribution(logits, Sampling(temperature=1.0, top_p=0.9))
    assert ids.tolist() == [0, 1, 2]  # 0.5 + 0.3 < 0.9 <= 0.5 + 0.3 + 0.15
    assert ids.dtype == np.int32 and probs.dtype == np.float16 and ids.nbytes + probs.nbytes == 6 * 3
    assert probs.astype(float) == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95], abs=1e-3)


@pytest.mark.parametrize("alpha, k, tokens", [(0.0, 4, 1.0), (1.0, 4, 5.0), (0.5, 2, 1.75), (0.8, 1, 1.8)])
def test_expected_tokens_per_round(alpha, k, tokens):
    assert expected_tokens(alpha, k) == pytest.approx(tokens)


def _trained_auto_k(alpha: float, draft_ms: float, verify: tuple[float, float], rounds: int = 400) -> AutoK:
    """An AutoK that has seen ``rounds`` rounds with per-draft acceptance ``alpha`` and a round trip
    of ``verify[0] + verify[1] x k`` ms."""
    policy, rng = AutoK(k_max=24), np.random.default_rng(0)
    for _ in range(rounds):
        k = policy.choose()
        accepted = 0
        while accepted < k and rng.random() < alpha:
            accepted += 1
        policy.observe(k, accepted, draft_ms * k, verify[0] + verify[1] * k)
    return policy


@pytest.mark.parametrize("alpha, draft_ms, verify, best", [
    (0.8, 2.0, (40.0, 1.0), range(5, 10)),  # a long round trip and a good, cheap draft: draft many (best 6-7)
    (0.3, 2.0, (40.0, 1.0), range(1, 4)),  # a poor draft: one or two
    (0.8, 30.0, (40.0, 1.0), range(1, 5)),  # a slow draft: few
    (0.8, 2.0, (5.0, 8.0), range(1, 4)),  # a verification that grows steeply with k: few
])
def test_auto_k_picks_the_draft_length_the_cost_model_favours(alpha, draft_ms, verify, best):
    policy = _trained_auto_k(alpha, draft_ms, verify)
    chosen = policy.choose()
    assert chosen in best, (chosen, policy.alpha)
    assert policy.alpha == pytest.approx(alpha, abs=0.08)
    # and it is the true optimum of the model it learned, not a neighbour
    truth = [(k * draft_ms + verify[0] + verify[1] * k) / expected_tokens(alpha, k) for k in range(1, 25)]
    assert truth[chosen - 1] <= 1.05 * min(truth)


@pytest.mark.parametrize("k", [0, -1, 65])
def test_k_out_of_range_is_refused(k):
    target, draft = _tables()
    with pytest.raises(InputError, match="k"):
        speculate(Drafter(BigramLM(draft)), LocalVerifier(BigramLM(target)), [0], 4, k)


@pytest.mark.parametrize("text, fragment", [("0", "out of range"), ("65", "out of range"), ("four", "whole number")])
def test_the_k_option_names_what_is_wrong(text, fragment):
    from aiflow_cli.api.generate import parse_k

    with pytest.raises(InputError, match=fragment):
        parse_k(text)
    assert parse_k("auto") == "auto" and parse_k("24") == 24


@pytest.mark.parametrize("sampling", [dict(temperature=-1), dict(temperature=1, top_p=0), dict(top_k=-2)])
def test_bad_sampling_settings_are_refused(sampling):
    with pytest.raises(InputError):
        Sampling(**sampling)


def _fake_lm(vocab: dict[str, int], out_features: int) -> SimpleNamespace:
    hf = SimpleNamespace(lm_head=SimpleNamespace(out_features=out_features))
    return SimpleNamespace(task="causal-lm", spec="fake", extras={"hf_model": hf},
                           tokenizer=SimpleNamespace(get_vocab=lambda: dict(vocab)))


def test_a_draft_with_another_vocabulary_is_refused_naming_the_first_difference():
    from aiflow_cli.export.speculative import check_same_vocabulary

    target = _fake_lm({t: i for i, t in enumerate("abcdef")}, 6)
    draft = _fake_lm({t: i for i, t in enumerate("abcxef")}, 6)
    with pytest.raises(InputError, match=r"vocabularies differ .*id 3: 'x' vs 'd'"):
        check_same_vocabulary(draft, target)
    check_same_vocabulary(_fake_lm({t: i for i, t in enumerate("abcdef")}, 6), target)  # the same: accepted
    with pytest.raises(InputError, match="scores 8 tokens"):
        check_same_vocabulary(_fake_lm({t: i for i, t in enumerate("abcdef")}, 8), target)


def test_every_two_token_outcome_is_reachable_in_the_chi_square_table():
    """Guards the test above: with these tables every pair has mass, so the test has 35 degrees of freedom."""
    p = _exact_pairs(_tables()[0], Sampling(temperature=1.0), 0)
    assert all(p[a, b] > 0 for a, b in product(range(VOCAB), repeat=2))


def test_auto_k_learns_from_decode_rounds_only_not_from_the_prompts_round():
    """The first round carries the prompt (a prefill): timing it as a k-draft round would bend the
    fitted verification cost, so the policy never sees it, and its probes start after it."""
    target, draft = _tables(3)
    policy = AutoK(k_max=8)
    rounds = speculate(Drafter(BigramLM(draft)), LocalVerifier(BigramLM(target)), [0], 30, policy)
    decode_rounds = [k for k in rounds.proposed[1:] if k > 0]  # a last round may draft nothing
    assert [k for k, _ in policy.verify] == decode_rounds
    assert [k for k, _ in policy.verify[:2]] == [2, 8]


@pytest.mark.parametrize("parameters, message", [({"seed": -1}, "seed"), ({"seed": 2**64}, "seed"),
                                                 ({"temperature": -1.0}, "temperature"), ({"top_p": 0}, "top-p")])
def test_a_verifier_refuses_sampling_parameters_out_of_range(parameters, message):
    from aiflow_cli.serve.server.verifier import sampling_of

    with pytest.raises(InputError, match=message):
        sampling_of(parameters)


def test_different_vocabularies_are_refused_before_any_weights_load(runner, monkeypatch, tmp_path):
    """A draft and a target from different families: the tokenizers alone decide, in seconds."""
    import aiflow_cli.models as models
    from aiflow_cli.cli.main import app
    from aiflow_cli.models.zoo import minilm_dir

    def no_weights(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a model's weights were loaded before the vocabularies were compared")

    monkeypatch.setattr(models, "load_model", no_weights)
    out = tmp_path / "spec"
    result = runner.invoke(app, ["split", "speculative", "--draft", "zoo:smollm2-135m", "--target",
                                 f"hf:{minilm_dir()}", "--export", str(out)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "vocabularies differ" in lines[0], result.output
    assert not out.exists()


class _SlowVerifier(LocalVerifier):
    """A LocalVerifier whose answer takes a while, as a round trip does: the device drafts meanwhile."""

    def verify(self, committed, drafts, supports, probs):  # noqa: ANN001, ANN201
        time.sleep(0.002)
        return super().verify(committed, drafts, supports, probs)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_overlapped_drafting_still_outputs_the_targets_greedy_tokens_and_uses_blocks_drafted_ahead(k):
    target, draft = _tables(1)
    mostly_right = target.copy()
    mostly_right[np.argmax(target[0])] = target[3]  # wrong after one token only
    used = 0
    for start in range(VOCAB):
        reference = decode_alone(BigramLM(target), [start], 24)
        for d in (draft, mostly_right):
            rounds = speculate(Drafter(BigramLM(d)), _SlowVerifier(BigramLM(target)), [start], 24, k, overlap=True)
            assert rounds.tokens == reference
            used += rounds.ahead_used if d is mostly_right else 0
    perfect = speculate(Drafter(BigramLM(target)), _SlowVerifier(BigramLM(target)), [0], 25, 4, overlap=True)
    assert perfect.ahead_used == len(perfect.accepted) - 1  # a perfect draft: every round after the first was ready
    assert perfect.accepted == [4] * 5
    assert used > 0  # an imperfect draft's blocks are kept too, when it was right


def _sampled_quads(sampling: Sampling, runs: int) -> np.ndarray:
    target, draft = _tables()
    counts = np.zeros((VOCAB,) * 4)
    used = 0
    for seed in range(runs):
        rounds = speculate(Drafter(BigramLM(draft), sampling, seed), LocalVerifier(BigramLM(target), sampling, seed),
                           [0], 4, 1, overlap=True)
        counts[tuple(rounds.tokens)] += 1
        used += rounds.ahead_used
    assert used > runs // 20  # the second round's draft was often made during the first verification
    return counts


def test_overlapped_sampling_keeps_the_target_only_distribution_over_four_tokens():
    """k = 1, four tokens (top-3 sampling: at most 81 sequences): the second round's draft is made
    while the first is verified and kept only when the first draft and the guessed extra token were
    right; the joint distribution of the four tokens still matches target-only sampling (chi-square,
    5,000 seeds, p above 1e-3)."""
    sampling = Sampling(temperature=1.0, top_k=3)
    target = _tables()[0]
    counts = _sampled_quads(sampling, 5000)
    exact = np.zeros((VOCAB,) * 4)
    for seq in product(range(VOCAB), repeat=4):
        prev, prob = 0, 1.0
        for t in seq:
            prob *= distribution(target[prev], sampling)[t]
            prev = t
        exact[seq] = prob
    assert _chi_square_p(counts, exact) > P_VALUE_FLOOR
