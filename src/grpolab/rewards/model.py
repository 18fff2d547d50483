"""A reward model: a sequence-classification checkpoint that scores prompt + completion, handed to TRL as a model.

TRL 1.16's ``GRPOTrainer`` treats an ``nn.Module`` in ``reward_funcs`` on its own path (``_calculate_rewards``): it
joins each prompt and completion (through the reward tokenizer's chat template when prompts are conversational),
tokenizes them with the matching ``reward_processing_classes`` entry (right padding, no special tokens added), runs
the model in inference mode and takes ``logits[:, 0]`` as the reward. A ``PreTrainedModel`` is also placed on the
training device, and its pad token ID set from that tokenizer. The metric is named after the last part of
``config._name_or_path``.

So ``RewardModel`` loads the checkpoint and its tokenizer, and TRL receives the model itself (still a
``PreTrainedModel``) and the tokenizer (``BuiltRewards.trainer_reward_funcs`` / ``reward_processing_classes``). The
model's ``config._name_or_path`` is set to the yaml key so TRL logs ``rewards/<key>/mean`` as for every other reward
(the checkpoint stays in ``RewardModel.name_or_path``). A ``RewardModelGuard`` is installed as the model's ``forward``,
the way accelerate installs its autocast wrapper, so a failure names the reward and the sequence that caused it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from grpolab.config.enums import DType
from grpolab.config.errors import ConfigError, first_line
from grpolab.rewards.base import RewardLevel, no_token_variant
from grpolab.rewards.wrappers import RewardError, _short

DTYPES = tuple(dtype.value for dtype in DType)


class RewardModel:
    """A sequence-classification reward model (one label) and its tokenizer, loaded once when the rewards are built.

    ``name_or_path`` is a local checkpoint directory or a hub id; ``tokenizer`` another tokenizer location (None: the
    checkpoint's own); ``dtype`` one of ``DTYPES``. A reward model reads decoded text with its own tokenizer, so it
    runs at ``level=text`` only. The model is put in eval mode with gradients off: TRL only runs it for inference.

    The tokenizer is loaded with ``AutoTokenizer``, as TRL loads a reward model's tokenizer itself. Note that
    transformers 5 then picks the tokenizer class from the checkpoint's model type for some types (qwen2, phi3, ...),
    whatever ``tokenizer_config.json`` declares: grpolab's character tokenizer saved next to a Qwen2 model comes back
    as a byte-level ``Qwen2Tokenizer`` that drops spaces and newlines. Save such a tokenizer in a directory of its own
    and point ``tokenizer`` at it.

    >>> import tempfile, torch
    >>> from transformers import Qwen2Config, Qwen2ForSequenceClassification
    >>> from grpolab.models.tokenizer import build_char_tokenizer
    >>> checkpoint, tokenizer_dir, tokenizer = tempfile.mkdtemp(), tempfile.mkdtemp(), build_char_tokenizer()
    >>> config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=2, num_key_value_heads=1, num_labels=1)
    >>> Qwen2ForSequenceClassification(config).save_pretrained(checkpoint); _ = tokenizer.save_pretrained(tokenizer_dir)
    >>> reward = RewardModel(checkpoint, tokenizer=tokenizer_dir, name="reward_model")
    >>> reward.model.config._name_or_path, reward.processing_class.encode("7 \\n") == tokenizer.encode("7 \\n")
    ('reward_model', True)
    >>> inputs = reward.processing_class(["3+4=7", "3+4=8"], return_tensors="pt", padding=True, padding_side="right")
    >>> reward.model(**inputs).logits.shape
    torch.Size([2, 1])
    """

    required_columns: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        name_or_path: str,
        tokenizer: str | None = None,
        dtype: str = "float32",
        level: RewardLevel | str = RewardLevel.text,
        name: str | None = None,
    ) -> None:
        name = name or "reward_model"
        self.level = RewardLevel.parse(level, where=f"rewards.{name}.level")
        if self.level is RewardLevel.token:  # it reads decoded text with its own tokenizer
            raise no_token_variant(name, has_level_key=True)
        if dtype not in DTYPES:
            raise ConfigError(f"rewards.{name}.dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        self.name_or_path = name_or_path
        self.processing_class = _load(name, "tokenizer", tokenizer or name_or_path, _load_tokenizer)
        self.model = _load(name, "name_or_path", name_or_path, lambda path: _load_model(path, dtype))
        _check_compatible(name, self.model, self.processing_class)
        if self.processing_class.pad_token_id is None:  # what TRL does too: the model reads the last non-pad token
            self.processing_class.pad_token = self.processing_class.eos_token
        self.model.config.get_text_config().pad_token_id = self.processing_class.pad_token_id
        self.model.eval().requires_grad_(False)
        self.model.forward = RewardModelGuard(self.model, self.processing_class)
        self.__name__ = name

    @property
    def __name__(self) -> str:  # type: ignore[override]
        return self.model.config._name_or_path

    @__name__.setter
    def __name__(self, name: str) -> None:
        # TRL logs an nn.Module reward as rewards/<last part of config._name_or_path>/mean.
        self.model.config._name_or_path = name

    def __repr__(self) -> str:
        return f"RewardModel({self.name_or_path!r}, name={self.__name__!r})"


class RewardModelGuard:
    """A reward model's ``forward``: runs the model class's forward and turns a failure into a ``RewardError`` naming
    the reward and the sequence. An exception is localised by re-running one sequence at a time (only after a failure);
    logits that are not one row per sequence, or a non-finite reward (``logits[:, 0]``), are reported with the
    sequence they concern. Sequences are shown decoded by the reward tokenizer, as the model saw them.
    """

    def __init__(self, model: Any, processing_class: Any) -> None:
        self.model = model
        self.processing_class = processing_class

    @property
    def label(self) -> str:
        return f"rewards.{self.model.config._name_or_path} (reward model)"

    def __call__(self, *args: Any, **inputs: Any) -> Any:
        forward = type(self.model).forward
        try:
            output = forward(self.model, *args, **inputs)
        except Exception as error:
            raise RewardError(self._describe_exception(forward, error, args, inputs)) from error
        self._check_output(output, inputs)
        return output

    def _describe_exception(self, forward: Any, error: Exception, args: tuple, inputs: dict[str, Any]) -> str:
        size = _batch_size(inputs)
        if args or size is None:
            return f"{self.label} raised {error!r}"
        for index in range(size):
            try:
                forward(self.model, **_one(inputs, index, size))
            except Exception as sample_error:
                sample = self._describe(inputs, index)
                return f"{self.label} raised {sample_error!r} on sample {index} of {size}: {sample}"
        return f"{self.label} raised {error!r} on a batch of {size} (no single sample reproduces it)"

    def _check_output(self, output: Any, inputs: dict[str, Any]) -> None:
        import torch

        size = _batch_size(inputs)
        logits = output.logits if hasattr(output, "logits") else output[0]
        if logits.ndim != 2 or (size is not None and logits.shape[0] != size):
            raise RewardError(f"{self.label} returned logits of shape {tuple(logits.shape)} for {size} sequences")
        finite = torch.isfinite(logits[:, 0])
        if not bool(finite.all()):
            index = int((~finite).nonzero()[0, 0])
            detail = f": {self._describe(inputs, index)}" if size is not None else ""
            raise RewardError(
                f"{self.label} returned {float(logits[index, 0])!r}, not a finite reward, for sample {index} of "
                f"{logits.shape[0]}{detail}"
            )

    def _describe(self, inputs: dict[str, Any], index: int) -> str:
        ids = inputs["input_ids"][index]
        mask = inputs.get("attention_mask")
        if mask is not None:
            ids = ids[mask[index].bool()]
        ids = ids.tolist()
        try:
            text = _short(self.processing_class.decode(ids, skip_special_tokens=False))
        except Exception as error:  # a tokenizer that cannot decode what it encoded is worth seeing too
            text = f"<undecodable: {error!r}>"
        return f"text={text} ({len(ids)} tokens)"


def _batch_size(inputs: dict[str, Any]) -> int | None:
    input_ids = inputs.get("input_ids")
    return None if input_ids is None else int(input_ids.shape[0])


def _one(inputs: dict[str, Any], index: int, size: int) -> dict[str, Any]:
    """One sequence of a batch: every per-sequence tensor cut to row ``index``, everything else as it is."""
    return {
        key: value[index : index + 1] if getattr(value, "shape", ())[:1] == (size,) else value
        for key, value in inputs.items()
    }


def _load(name: str, key: str, path: str, loader: Any) -> Any:
    try:
        return loader(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"rewards.{name}.{key}: cannot load {path!r}: {first_line(error)}") from error


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _load_model(path: str, dtype: str) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        path, dtype=dtype if dtype == "auto" else getattr(torch, dtype)
    )


def _check_compatible(name: str, model: Any, tokenizer: Any) -> None:
    if model.config.num_labels != 1:
        raise ValueError(
            f"rewards.{name}: the model has num_labels={model.config.num_labels}, but TRL reads logits[:, 0] as the "
            f"reward; use a reward model with one label"
        )
    vocab_size = model.config.get_text_config().vocab_size
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"rewards.{name}: the tokenizer has {len(tokenizer)} tokens but the model only {vocab_size} embeddings; "
            f"set rewards.{name}.tokenizer to the tokenizer the reward model was trained with"
        )
