"""A byte-level BPE tokenizer trained from text in about a second: subword behaviour like a real model's, no download.

Pre-tokenization is Qwen2's (NFC normalization, its split regex, then the byte-level mapping), so the tokenizer splits
text the way the Qwen family does: every digit is its own pre-token, a run of letters takes one leading non-letter
(``<think`` is one pre-token), and a run of punctuation takes the newlines after it (``>\\n``). The reasoning tags are
therefore never single tokens and can merge with their neighbours (``</think><answer>`` has the pre-token ``><``);
docs/tokenizer_mode.md says what that means for token-level rewards. Special tokens are the char
tokenizer's (``<|pad|>``, ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``) with the same ChatML chat template.

Training is deterministic: the same texts and settings give the same merges, so a tokenizer built from config in a
job equals the one a test builds beside it, and the ids-mode prompt cache recognises it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from grpolab.models.tokenizer import CHAT_TEMPLATE, DEFAULT_SPECIAL_TOKENS, EOS, PAD, wrap_backend

# Qwen2's pre-tokenizer split (tokenizer.json of Qwen/Qwen2.5-0.5B-Instruct).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
    chat_template: str | None = CHAT_TEMPLATE,
    min_frequency: int = 2,
    eos_token: str = EOS,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` tokens (256 bytes, merges, ``[pad, eos] + special_tokens``) on
    ``texts``; ``eos_token`` as in ``grpolab.models.tokenizer.build_char_tokenizer``.

    >>> tokenizer = train_bpe_tokenizer(["12 apples and 7 pears cost 19 dollars."] * 50, vocab_size=300)
    >>> tokenizer.decode(tokenizer("7 pears")["input_ids"]), len(tokenizer("<answer>")["input_ids"]) > 1
    ('7 pears', True)
    """
    specials = [PAD, EOS, *special_tokens]
    if vocab_size <= len(specials) + 256:
        raise ValueError(f"vocab_size={vocab_size} leaves no merges: it must exceed 256 bytes + {len(specials)} "
                         "special tokens")
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return wrap_backend(backend, special_tokens, chat_template, eos_token=eos_token)


def jsonl_texts(path: str | Path, fields: Sequence[str]) -> Iterator[str]:
    """The ``fields`` of every JSON object in a JSONL file, in file order (one field after another per line)."""
    with Path(path).expanduser().open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            for field in fields:
                if field not in record:
                    raise ValueError(f"model.tokenizer.fields: line {number} of {path} has no {field!r} field; it "
                                     f"has {', '.join(record)}")
                yield str(record[field])


def bpe_tokenizer_from_jsonl(path: str, fields: Sequence[str], vocab_size: int, min_frequency: int = 2,
                             eos_token: str = EOS) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the ``fields`` of a JSONL file (``model=tiny_bpe``), e.g. GSM8K's question and
    answer: ``bpe_tokenizer_from_jsonl("tests/fixtures/gsm8k/test.jsonl", ["question", "answer"], 4096)``."""
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"model.tokenizer.path={path!r} is not a file (a JSONL file to train the BPE on)")
    return train_bpe_tokenizer(jsonl_texts(path, list(fields)), vocab_size, min_frequency=min_frequency,
                               eos_token=eos_token)
