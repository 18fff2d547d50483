"""A character-level tokenizer built from config, so the embedded default needs no hub download.

Every printable ASCII character is one token, and each special/tag token (``<answer>``, ``<|im_start|>``, image
placeholders, ...) is one token too. Being character-level makes the text <-> ID round trip lossless for ASCII text,
which is what lets the ``text`` and ``ids`` tokenizer modes produce identical prompt IDs.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"

# A ChatML-style template (the Qwen family's) so chat-formatted prompts work with the tiny model too.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

DEFAULT_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>")
# Tags are single tokens but not "special": decoding with skip_special_tokens=True (as TRL does) must keep them,
# or text-level format rewards could never see them.
DEFAULT_TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")


def char_vocabulary() -> list[str]:
    """Printable ASCII (letters, digits, punctuation, space, newline, tab) in a fixed order."""
    return list(dict.fromkeys(string.printable))


def build_char_tokenizer(
    special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
    tag_tokens: Sequence[str] = DEFAULT_TAG_TOKENS,
    chat_template: str | None = CHAT_TEMPLATE,
) -> PreTrainedTokenizerFast:
    """Build the character-level tokenizer: ``[pad, eos, unk] + special_tokens + tag_tokens + printable ASCII``.

    >>> tok = build_char_tokenizer()
    >>> tok.decode(tok("12+7=")["input_ids"])
    '12+7='
    """
    specials = [PAD, EOS, UNK, *special_tokens]
    vocab = {token: i for i, token in enumerate([*specials, *tag_tokens, *char_vocabulary()])}
    # BPE without merges is a character model that still honours added special tokens as single units.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=True))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = wrap_backend(backend, special_tokens, chat_template, unk_token=UNK)
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in tag_tokens])
    return tokenizer


def wrap_backend(backend: Tokenizer, special_tokens: Sequence[str], chat_template: str | None,
                 **extra: str) -> PreTrainedTokenizerFast:
    """The transformers tokenizer around a ``tokenizers`` backend, as every tokenizer grpolab builds has it: its pad
    and EOS tokens, left padding (generation continues the prompt), no clean-up of spaces (decoding stays lossless)."""
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS,
                                        additional_special_tokens=list(special_tokens),
                                        clean_up_tokenization_spaces=False, padding_side="left", **extra)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer
