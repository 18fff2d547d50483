"""``tokenizer_mode=ids`` through the real composition root (hydra compose + ``grpolab.train.train``).

* during ``trainer.train()`` in ids mode the tokenizer never encodes (and, with token rewards and completion logging
  off, never decodes); the same spy sees both in text mode, so these tests can fail;
* text and ids mode give the same prompt IDs, completion IDs, loss and rewards for the first 5 steps;
* a lossy prompt round trip is announced at start-up; bad inputs fail before training in one line;
* with a byte-level BPE (model=tiny_bpe): pre-tokenized prompts reach generation and the rewards exactly as given,
  non-canonical ones included (the text mode re-encodes them), and canonical ones give identical text/ids steps.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from grpolab.trainer.grpo import GrpolabTrainer

pytestmark = pytest.mark.slow

PIPELINE = [
    "logger=none",
    "trainer.logging_steps=1",
    "trainer.max_steps=2",
    "warmstart.steps=60",
    "data.train_size=64",
    "data.eval_size=16",
    "batch.prompts_per_step=4",
    "batch.generations_per_prompt=4",
]
JSONL = ["data=jsonl", "data.eval_size=4", "warmstart=none", "logger=none", "trainer.logging_steps=1",
         "trainer.max_steps=1", "batch.prompts_per_step=2", "batch.generations_per_prompt=2"]


def run_pipeline(compose_cfg, run_dir: Path, *overrides: str) -> Path:
    """One job of ``python -m grpolab.train`` in this process; returns its run directory."""
    from grpolab.train import train

    cfg = compose_cfg([*overrides, f"hydra.run.dir={run_dir}"], return_hydra_config=True)
    previous = HydraConfig.instance().cfg
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(cfg)
        del cfg["hydra"]  # what Hydra's run_job hands the task function
    try:
        train(cfg)
    finally:
        HydraConfig.instance().cfg = previous  # the tests after this one run outside a Hydra job again
    return run_dir


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run_both_modes(compose_cfg, tmp_path: Path, recorded_batches: list, *overrides: str) -> tuple[dict, dict]:
    """The same job in text and in ids mode: each run's recorded batches and ``metrics.jsonl`` rows."""
    runs = {}
    for mode in ("text", "ids"):
        recorded_batches.clear()
        run_dir = run_pipeline(compose_cfg, tmp_path / mode, *overrides, f"tokenizer_mode={mode}")
        runs[mode] = {"batches": list(recorded_batches), "metrics": metrics(run_dir)}
    return runs["text"], runs["ids"]


# -- counting tokenizer calls during trainer.train() ---------------------------------------------------------------


class TokenizerSpy:
    """Counts every encode and decode entry point of a transformers 5.23 ``TokenizersBackend`` instance, down to the
    Rust backend (``_tokenizer``), while ``watching`` it."""

    ENCODE = ("__call__", "encode", "_encode_plus", "apply_chat_template", "tokenize", "_encode_without_added_tokens")
    DECODE = ("decode", "batch_decode", "_decode", "convert_ids_to_tokens", "convert_tokens_to_string")
    BACKEND_ENCODE = ("encode", "encode_batch", "encode_batch_fast")
    BACKEND_DECODE = ("decode", "decode_batch")

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    @property
    def encodes(self) -> int:
        return sum(n for name, n in self.calls.items() if name in self.ENCODE or name in self._backend(self.BACKEND_ENCODE))

    @property
    def decodes(self) -> int:
        return sum(n for name, n in self.calls.items() if name in self.DECODE or name in self._backend(self.BACKEND_DECODE))

    @staticmethod
    def _backend(names):
        return {f"backend.{name}" for name in names}

    def _counting(self, name, function):
        def counting(*args, **kwargs):
            self.calls[name] += 1
            return function(*args, **kwargs)

        return counting

    @contextmanager
    def watching(self, tokenizer):
        cls, backend = type(tokenizer), tokenizer._tokenizer
        for name in self.ENCODE[1:] + self.DECODE:
            setattr(tokenizer, name, self._counting(name, getattr(tokenizer, name)))
        # `tokenizer(...)` looks __call__ up on the type, so the instance gets a counting subclass for the duration.
        tokenizer.__class__ = type(f"Spied{cls.__name__}", (cls,), {
            "__call__": lambda this, *a, **k: self._counting("__call__", cls.__call__)(this, *a, **k)})
        tokenizer._tokenizer = _CountingBackend(backend, self)
        try:
            yield self
        finally:
            tokenizer.__class__, tokenizer._tokenizer = cls, backend
            for name in self.ENCODE[1:] + self.DECODE:
                delattr(tokenizer, name)


class _CountingBackend:
    """Delegates to the Rust ``tokenizers.Tokenizer`` (whose methods cannot be patched), counting encode/decode."""

    def __init__(self, backend, spy: TokenizerSpy) -> None:
        object.__setattr__(self, "_backend", backend)
        object.__setattr__(self, "_spy", spy)

    def __getattr__(self, name):
        attribute = getattr(self._backend, name)
        if name in TokenizerSpy.BACKEND_ENCODE + TokenizerSpy.BACKEND_DECODE:
            return self._spy._counting(f"backend.{name}", attribute)
        return attribute

    def __setattr__(self, name, value):
        setattr(self._backend, name, value)


@pytest.fixture
def spy(monkeypatch, shared_cache):
    """A ``TokenizerSpy`` that watches the trainer's tokenizer during ``trainer.train()`` only (the warm start and
    the prompt preparation come before it, from the session's shared cache once computed)."""
    monkeypatch.setenv("GRPOLAB_CACHE_DIR", str(shared_cache))
    watcher, original_train = TokenizerSpy(), GrpolabTrainer.train

    def train(self, *args, **kwargs):
        with watcher.watching(self.processing_class):
            return original_train(self, *args, **kwargs)

    monkeypatch.setattr(GrpolabTrainer, "train", train)
    return watcher


def test_spy_sees_every_entry_point(spy):
    from grpolab.models.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    with spy.watching(tokenizer):
        tokenizer("ab")
        tokenizer.batch_decode([[10]])
    assert {"__call__", "_encode_plus", "backend.encode_batch", "batch_decode", "_decode", "backend.decode"} <= set(
        spy.calls)
    assert tokenizer("ab")["input_ids"] and type(tokenizer).__name__ == "TokenizersBackend"


@pytest.mark.parametrize(
    ("mode", "level", "encodes", "decodes"),
    [("ids", "token", False, False), ("ids", "text", False, True), ("text", "token", True, True),
     ("text", "text", True, True)],
)
def test_tokenizer_calls_during_train(compose_cfg, tmp_path, spy, mode, level, encodes, decodes):
    run_dir = run_pipeline(compose_cfg, tmp_path / "run", *PIPELINE, f"tokenizer_mode={mode}",
                           f"reward_level={level}")
    # Both the public entry points and the two funnels every encode/decode path ends in.
    assert (spy.encodes > 0, spy.decodes > 0) == (encodes, decodes), spy.calls
    assert (spy.calls["_encode_plus"] > 0, spy.calls["_decode"] > 0) == (encodes, decodes), spy.calls
    if mode == "text":  # TRL tokenizes the whole generation batch (prompts repeated per completion) every step
        assert spy.calls["__call__"] == 2 and spy.calls["backend.encode_batch"] == 2
    logged = [row["tokenizer/calls"] for row in metrics(run_dir) if "tokenizer/calls" in row]
    assert len(logged) == 2 and (sum(logged) > 0) == (encodes or decodes)


# -- text and ids mode take identical steps -------------------------------------------------------------------------


@pytest.fixture
def recorded_batches(monkeypatch):
    """Every generation batch's unpadded prompt IDs, completion IDs and advantages, in order."""
    batches: list[dict] = []
    original = GrpolabTrainer._generate_and_score_completions

    def recording(self, inputs):
        output = original(self, inputs)
        prompt_mask, completion_mask = output["prompt_mask"].bool(), output["completion_mask"].bool()
        batches.append({
            "prompt_ids": [ids[m].tolist() for ids, m in zip(output["prompt_ids"], prompt_mask)],
            "completion_ids": [ids[m].tolist() for ids, m in zip(output["completion_ids"], completion_mask)],
            "advantages": output["advantages"].tolist(),
        })
        return output

    monkeypatch.setattr(GrpolabTrainer, "_generate_and_score_completions", recording)
    return batches


@pytest.mark.parametrize("level", ["text", "token"])
def test_text_and_ids_modes_take_identical_first_five_steps(compose_cfg, tmp_path, monkeypatch, recorded_batches,
                                                            level, shared_cache):
    monkeypatch.setenv("GRPOLAB_CACHE_DIR", str(shared_cache))
    text, ids = run_both_modes(compose_cfg, tmp_path, recorded_batches, *PIPELINE, "trainer.max_steps=5",
                               f"reward_level={level}")
    assert len(text["batches"]) == len(ids["batches"]) == 5
    assert text["batches"] == ids["batches"]
    keys = ["loss", "reward", "reward_std", "rewards/accuracy/mean", "rewards/format/mean", "entropy"]
    assert [[row[k] for k in keys] for row in text["metrics"]] == [[row[k] for k in keys] for row in ids["metrics"]]
    # The comparison has teeth: the policy learned something and the rewards were not all equal.
    assert any(row["loss"] != 0 for row in text["metrics"])
    assert any(row["reward_std"] > 0 for row in text["metrics"])
    assert len({tuple(ids) for batch in text["batches"] for ids in batch["completion_ids"]}) > 10


# -- start-up warnings and fail-fast errors -------------------------------------------------------------------------


def write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_lossy_prompt_round_trip_is_announced_at_start_up(compose_cfg, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GRPOLAB_CACHE_DIR", str(tmp_path / "cache"))
    records = [{"prompt": f"{a}+{a}= (naïve)", "answer": str(2 * a)} for a in range(10)]
    path = write_jsonl(tmp_path / "rows.jsonl", records)
    with caplog.at_level(logging.WARNING, logger="grpolab.data.prepare"):
        run_pipeline(compose_cfg, tmp_path / "run", *JSONL, f"data.path={path}", "tokenizer_mode=ids")
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert any("does not round-trip 6 of 6 train prompts" in w for w in warnings), warnings
    assert any("does not round-trip 4 of 4 eval prompts" in w for w in warnings), warnings


def test_pretokenized_jsonl_trains_in_ids_mode_without_encoding(compose_cfg, tmp_path, spy):
    from grpolab.models.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    records = [{"prompt_ids": tokenizer(f"{a}+1=")["input_ids"], "answer": str(a + 1)} for a in range(10)]
    path = write_jsonl(tmp_path / "rows.jsonl", records)
    run_dir = run_pipeline(compose_cfg, tmp_path / "run", *JSONL, f"data.path={path}", "tokenizer_mode=ids",
                           "reward_level=token")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["eval_after"]["num_samples"] == 4
    assert (spy.encodes, spy.decodes) == (0, 0)


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([{"prompt_ids": [10, 5000], "answer": "1"}] * 6,
         "train split: row 0 of 'prompt_ids' has token id 5000 outside the model's vocabulary [0, 109)"),
        ([{"prompt_ids": "10 11", "answer": "1"}] * 6,
         "train split: column 'prompt_ids' must hold non-empty lists of ints; row 0 has '10 11'"),
        ([{"prompt_ids": [10, 1.5], "answer": "1"}] * 6,
         "train split: column 'prompt_ids' must hold non-empty lists of ints; row 0 has [10.0, 1.5]"),
    ],
)
def test_bad_prompt_ids_fail_before_the_model_is_built(compose_cfg, tmp_path, monkeypatch, records, expected):
    from grpolab.data.task import DataError

    monkeypatch.setenv("GRPOLAB_CACHE_DIR", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "rows.jsonl", records)
    with pytest.raises(DataError) as error:
        run_pipeline(compose_cfg, tmp_path / "run", *JSONL, f"data.path={path}", "tokenizer_mode=ids")
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["eval_before"] is None


def test_token_level_without_a_token_variant_fails_before_the_model_is_built(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOLAB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="^rewards.think_format has no token variant") as error:
        run_pipeline(compose_cfg, tmp_path / "run", *PIPELINE, "rewards=[accuracy,think_format]",
                     "reward_level=token", "tokenizer_mode=ids")
    assert "\n" not in str(error.value)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["eval_before"] is None


def test_the_entry_point_reports_a_bad_dataset_in_one_line(run_job, tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt_ids": [10, 5000], "answer": "1"}] * 6)
    result = run_job(*JSONL, f"data.path={path}", "tokenizer_mode=ids")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("grpolab:")]
    assert errors == ["grpolab: config error: train split: row 0 of 'prompt_ids' has token id 5000 outside the "
                      "model's vocabulary [0, 109) (tokenizer_mode=ids with a dataset tokenized for another model?)"]
    assert "Traceback" not in result.stderr


# -- a byte-level BPE tokenizer (model=tiny_bpe, trained on the vendored GSM8K text) --------------------------------


def bpe_overrides(gsm8k_test_split: Path) -> list[str]:
    """The tiny Qwen2 with the BPE; "<answer>19</answer>" + EOS is 12 BPE tokens, so completions get room for it."""
    return ["model=tiny_bpe", f"model.tokenizer.path={gsm8k_test_split}", "trainer.max_completion_length=16"]


def bpe_tokenizer(gsm8k_test_split: Path):
    """The tokenizer model=tiny_bpe builds in the job (BPE training is deterministic)."""
    from grpolab.models.bpe import bpe_tokenizer_from_jsonl

    return bpe_tokenizer_from_jsonl(str(gsm8k_test_split), ["question", "answer"], 4096)


@pytest.fixture
def generation_inputs(monkeypatch):
    """The prompt IDs every train step hands to generation, and those its rewards receive as ``prompt_ids``."""
    seen: dict[str, list[list[int]]] = {"generation": [], "rewards": []}
    generate, reward_rows = GrpolabTrainer._generate_single_turn, GrpolabTrainer._reward_rows

    def recording_generate(self, prompt_ids, *args, **kwargs):
        seen["generation"].extend(list(map(int, ids)) for ids in prompt_ids)
        return generate(self, prompt_ids, *args, **kwargs)

    def recording_rows(self, inputs):
        rows = reward_rows(self, inputs)
        seen["rewards"].extend(list(map(int, row["prompt_ids"])) for row in rows)
        return rows

    monkeypatch.setattr(GrpolabTrainer, "_generate_single_turn", recording_generate)
    monkeypatch.setattr(GrpolabTrainer, "_reward_rows", recording_rows)
    return seen


def test_bpe_prompt_ids_reach_generation_as_given_even_when_not_canonical(compose_cfg, tmp_path, monkeypatch,
                                                                         gsm8k_test_split, generation_inputs):
    """GSM8K questions as IDs: half the tokenizer's own encoding, half encoded sentence by sentence (each keeping its
    trailing space, which the canonical encoding merges into the next word). The ids mode hands every row to
    generation and to the rewards exactly as given; the text mode, given the same prompts as text, re-encodes them."""
    import re

    monkeypatch.setenv("GRPOLAB_CACHE_DIR", str(tmp_path / "cache"))
    tokenizer = bpe_tokenizer(gsm8k_test_split)
    rows = [json.loads(line) for line in gsm8k_test_split.read_text(encoding="utf-8").splitlines()[:12]]
    records = []
    for index, row in enumerate(rows):
        sentences = re.findall(r".+?(?:[.?!]\s+|$)", row["question"]) if index % 2 else [row["question"]]
        ids = [i for sentence in sentences for i in tokenizer(sentence)["input_ids"]]
        records.append({"prompt_ids": ids, "prompt": tokenizer.decode(ids),
                        "answer": row["answer"].rpartition("####")[2].strip()})
    canonical = [tokenizer(r["prompt"])["input_ids"] for r in records]
    non_canonical = [r["prompt_ids"] for r, c in zip(records, canonical) if r["prompt_ids"] != c]
    assert len(non_canonical) == 6  # every sentence-wise row has a sentence boundary the canonical encoding merges
    settings = [*bpe_overrides(gsm8k_test_split), "data=jsonl", "data.eval_size=4", "warmstart=none",
                "trainer.max_steps=1", "batch.prompts_per_step=8", "batch.generations_per_prompt=2"]

    path = write_jsonl(tmp_path / "ids.jsonl", [{k: r[k] for k in ("prompt_ids", "answer")} for r in records])
    run_pipeline(compose_cfg, tmp_path / "ids", *settings, f"data.path={path}", "tokenizer_mode=ids")
    given = {tuple(r["prompt_ids"]) for r in records}
    generated_from = {tuple(ids) for ids in generation_inputs["generation"]}
    assert len(generated_from) == 8 and generated_from <= given  # the 8 train rows, each exactly as in the file
    assert {tuple(ids) for ids in generation_inputs["rewards"]} == generated_from
    assert any(list(ids) in non_canonical for ids in generated_from)

    generation_inputs["generation"].clear()
    path = write_jsonl(tmp_path / "text.jsonl", [{k: r[k] for k in ("prompt", "answer")} for r in records])
    run_pipeline(compose_cfg, tmp_path / "text", *settings, f"data.path={path}", "tokenizer_mode=text")
    text_mode = {tuple(ids) for ids in generation_inputs["generation"]}
    assert len(text_mode) == 8 and text_mode <= {tuple(ids) for ids in canonical}  # same rows, re-encoded
    assert text_mode != generated_from


@pytest.mark.parametrize(("data", "level"), [("arithmetic", "text"), ("arithmetic", "token"), ("gsm8k", "text")])
def test_text_and_ids_modes_take_identical_steps_with_a_bpe_tokenizer(compose_cfg, tmp_path, monkeypatch,
                                                                      recorded_batches, gsm8k_test_split, data, level,
                                                                      shared_cache):
    """Canonical IDs (the ids mode encodes the prompts with the call TRL makes): both modes generate from the same
    IDs and take the same steps, as with the character tokenizer, for plain prompts (arithmetic) and GSM8K chat
    prompts (~120 BPE tokens). The length reward varies within every group (in characters on GSM8K, where the
    barely warm-started model fills all 16 tokens, with a wide tolerance)."""
    monkeypatch.setenv("GRPOLAB_CACHE_DIR", str(shared_cache))
    task = ["rewards.length.target=8"] if data == "arithmetic" else [
        "data=gsm8k", f"data.path={gsm8k_test_split}", "warmstart.steps=5", "warmstart.batch_size=8",
        "rewards.length.target=40", "rewards.length.tolerance=200"]
    text, ids = run_both_modes(compose_cfg, tmp_path, recorded_batches, *PIPELINE, *bpe_overrides(gsm8k_test_split),
                               "trainer.max_steps=3", "rewards=[accuracy,format,length]", *task,
                               f"reward_level={level}")
    assert len(text["batches"]) == len(ids["batches"]) == 3
    assert text["batches"] == ids["batches"]
    keys = ["loss", "reward", "reward_std", "rewards/accuracy/mean", "rewards/format/mean", "rewards/length/mean"]
    assert [[row[k] for k in keys] for row in text["metrics"]] == [[row[k] for k in keys] for row in ids["metrics"]]
    assert any(row["loss"] != 0 for row in text["metrics"]) and any(row["reward_std"] > 0 for row in text["metrics"])
    prompt_lengths = {len(ids) for batch in text["batches"] for ids in batch["prompt_ids"]}
    assert max(prompt_lengths) > 1 and len({tuple(c) for b in text["batches"] for c in b["completion_ids"]}) > 10
