"""Image tasks as the data options build them: shapes (with its imperfect teacher), JSONL files and dataset dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from grpolab.config.validate import ConfigError
from grpolab.data.image_tasks import ImageQATask, ShapesTask
from grpolab.data.images import ImageDataError


def test_shapes_task_gives_disjoint_splits_of_image_rows():
    splits = ShapesTask(train_size=50, eval_size=20).load()
    assert len(splits.train) == 50 and len(splits.eval) == 20
    assert {"prompt", "image", "answer", "solution"} <= set(splits.train.column_names)
    def stored_png(rows):
        return [entry["bytes"] for entry in rows.cast_column("image", ImageFeature(decode=False))["image"]]

    train_png, eval_png = set(stored_png(splits.train)), stored_png(splits.eval)
    assert not train_png.intersection(eval_png)
    assert splits.eval[0]["image"].size == (56, 56)


def test_the_imperfect_teacher_undercounts_crowded_training_scenes_only():
    clean = ShapesTask(train_size=400, eval_size=50).load()
    noisy = ShapesTask(train_size=400, eval_size=50, teacher_error_rate=0.6, teacher_slip_from=4).load()
    assert noisy.train["answer"] == clean.train["answer"]  # the reward's gold answer stays true
    assert noisy.eval["solution"] == clean.eval["solution"]
    slipped = [(int(a), s) for a, s, c in zip(noisy.train["answer"], noisy.train["solution"], clean.train["solution"])
               if s != c]
    assert all(answer >= 4 and solution == f"<answer>{answer - 1}</answer>" for answer, solution in slipped)
    crowded = sum(int(a) >= 4 for a in noisy.train["answer"])
    assert 0.45 < len(slipped) / crowded < 0.75


def test_a_solution_prefix_opens_every_training_solution_slips_included():
    settings = dict(train_size=100, eval_size=10, teacher_error_rate=0.6)
    plain, thinking = ShapesTask(**settings).load(), ShapesTask(**settings, solution_prefix="<think></think>").load()
    assert thinking.train["solution"] == ["<think></think>" + solution for solution in plain.train["solution"]]
    assert thinking.train["answer"] == plain.train["answer"] and thinking.eval["solution"] == plain.eval["solution"]


def test_shapes_task_rejects_bad_teacher_settings():
    with pytest.raises(ValueError, match="teacher_error_rate=1.5 must be in"):
        ShapesTask(teacher_error_rate=1.5)
    with pytest.raises(ValueError, match="with data.task=colour set it to 0"):
        ShapesTask(task="colour", teacher_error_rate=0.5)


def _write_jsonl(folder: Path, count: int, name: str = "qa.jsonl", missing: int | None = None) -> Path:
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        if i != missing:
            Image.new("RGB", (20, 20), (i, 0, 0)).save(folder / "imgs" / f"{i}.png")
        rows.append({"image": f"imgs/{i}.png", "question": f"Q{i}?", "answer": str(i)})
    path = folder / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_jsonl_held_out_rows_are_carved_by_seed(tmp_path):
    path = _write_jsonl(tmp_path, 10)
    splits = ImageQATask(path=str(path), eval_size=3, seed=7).load()
    assert len(splits.eval) == 3 and len(splits.train) == 7
    assert not set(splits.train["answer"]) & set(splits.eval["answer"])
    assert splits.eval["answer"] == ImageQATask(path=str(path), eval_size=3, seed=7).load().eval["answer"]
    assert splits.eval["answer"] != ImageQATask(path=str(path), eval_size=3, seed=8).load().eval["answer"]
    row = splits.eval[0]
    assert row["image"].getpixel((0, 0))[0] == int(row["answer"])  # the row's own image, decoded on access
    assert len(ImageQATask(path=str(path), eval_size=3, train_size=2).load().train) == 2


def test_jsonl_with_a_separate_held_out_file(tmp_path):
    train = _write_jsonl(tmp_path, 4)
    held_out = _write_jsonl(tmp_path / "test", 2, name="test.jsonl")
    splits = ImageQATask(path=str(train), eval_path=str(held_out)).load()
    assert splits.train["answer"] == ["0", "1", "2", "3"] and splits.eval["answer"] == ["0", "1"]


def test_too_large_eval_size_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.eval_size=5 leaves no training rows"):
        ImageQATask(path=str(_write_jsonl(tmp_path, 5)), eval_size=5).load()


def test_missing_image_names_row_and_path(tmp_path):
    path = _write_jsonl(tmp_path, 4, missing=2)
    with pytest.raises(ImageDataError, match=r"row 2: image file not found: .*imgs/2\.png"):
        ImageQATask(path=str(path), eval_size=1).load()


def test_a_dataset_directory_with_an_image_column_loads_like_a_hub_id(tmp_path):
    """The hub path (load_dataset(name)) with a local directory standing in for e.g. leonardPKU/clevr_cogen_a_train."""
    images = []
    for i in range(6):
        Image.new("RGB", (8, 8), (0, i, 0)).save(tmp_path / f"{i}.png")
        images.append({"bytes": (tmp_path / f"{i}.png").read_bytes(), "path": None})
    features = Features({"image": ImageFeature(), "problem": Value("string"), "solution": Value("string")})
    rows = Dataset.from_dict({"image": images, "problem": [f"How many? {i}" for i in range(6)],
                              "solution": [f"<answer> {i} </answer>" for i in range(6)]}, features=features)
    (tmp_path / "hub").mkdir()
    rows.to_parquet(str(tmp_path / "hub" / "train.parquet"))
    task = ImageQATask(path=str(tmp_path / "hub"), question_column="problem", answer_column="solution",
                       answer_pattern=r"<answer>\s*(.*?)\s*</answer>", instruction="Answer in tags.", eval_size=2)
    splits = task.load()
    row = splits.train[0]
    assert row["prompt"][0]["content"][-1]["text"].endswith("? " + row["answer"] + " Answer in tags.")
    assert row["image"].getpixel((0, 0))[1] == int(row["answer"])
    assert row["solution"] == f"<answer>{row['answer']}</answer>"
