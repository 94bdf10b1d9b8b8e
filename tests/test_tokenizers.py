"""transformers 4.57.3-4.57.6 warns that a tokenizer "has an incorrect regex pattern" whenever a local
folder it saved holds one of over 100,000 tokens, whatever the model (the Qwen2.5-Coder pair included).
The patch it offers is for Mistral tokenizers; for any other model the warning is a false alarm, which
aiflow silences (fix_mistral_regex=False) without changing a single id."""

from __future__ import annotations

import json
import logging

import pytest

STRINGS = ["def quicksort(arr):\n    return sorted(arr)\n", "你好，世界！量子计算", "12345678901234567890 3.14159",
           "a  b\t\tc\n\n\n   d    ", "It's  they'll  WE'VE", "🙂 émoji café"]
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
               r"\s+(?!\S)|\s+")  # Qwen2's pre-tokenizer, as the Qwen2.5 GGUF's tokenizer.ggml.pre = qwen2 defines it


@pytest.fixture(scope="module")
def qwen_like_folder(tmp_path_factory):
    """A byte-level BPE tokenizer with Qwen2's pre-tokenizer and 100,256 tokens, saved as transformers
    4.57.6 saves a model folder (config.json with model_type qwen2)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    vocab.update({f"tok{i}": len(vocab) + i for i in range(100_256 - len(vocab))})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    folder = tmp_path_factory.mktemp("qwen-like")
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "transformers_version": "4.57.6"}))
    return folder


def _load_logging(load):  # noqa: ANN001, ANN202 - what transformers warns while ``load()`` runs
    from transformers.utils import logging as hf_logging

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    root = hf_logging.get_logger("transformers")
    root.addHandler(handler)
    try:
        return load(), " ".join(records)
    finally:
        root.removeHandler(handler)


def test_plain_transformers_raises_the_false_alarm_and_aiflow_does_not(qwen_like_folder):
    from transformers import AutoConfig, AutoTokenizer

    from aiflow_cli.models.hf import load_tokenizer

    plain, plain_log = _load_logging(lambda: AutoTokenizer.from_pretrained(qwen_like_folder))
    config = AutoConfig.for_model("qwen2")
    ours, our_log = _load_logging(lambda: load_tokenizer(qwen_like_folder, config))
    assert "incorrect regex pattern" in plain_log  # the false alarm this test is about
    assert "incorrect regex pattern" not in our_log
    for text in STRINGS:
        assert ours(text)["input_ids"] == plain(text)["input_ids"], text
    pre = json.loads(ours.backend_tokenizer.to_str())["pre_tokenizer"]
    assert pre["pretokenizers"][0]["pattern"]["Regex"] == QWEN2_SPLIT  # untouched

