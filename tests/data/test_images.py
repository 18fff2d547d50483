"""Local JSONL image QA data and the hub-dataset path (exercised through a local directory, never the network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image

from grpolab.data.images import ANSWER_TAG_PATTERN, ImageDataError, load_image_qa


def _write_image(path: Path, colour: str = "red", size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    for index, colour in enumerate(("red", "green", "blue")):
        _write_image(tmp_path / "imgs" / f"{index}.png", colour)
    rows = [{"image": f"imgs/{i}.png", "question": "Which colour?", "answer": i, "note": "x"} for i in range(3)]
    return _write_jsonl(tmp_path / "train.jsonl", rows)


def test_jsonl_rows_become_contract_rows_with_relative_paths_resolved(jsonl: Path, tmp_path: Path):
    # Loaded from another working directory's point of view: only the JSONL's folder may matter.
    dataset = load_image_qa(str(jsonl))
    assert dataset.column_names == ["prompt", "image", "answer", "solution"]
    row = dataset[2]
    assert row["prompt"] == [
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Which colour?"}]}
    ]
    assert row["answer"] == "2" and row["solution"] == "<answer>2</answer>"  # JSON ints become strings
    assert row["image"].convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    stored = dataset.cast_column("image", ImageFeature(decode=False))[2]["image"]
    assert stored == {"bytes": None, "path": str(tmp_path / "imgs" / "2.png")}


def test_images_are_decoded_on_access_not_at_load(jsonl: Path, tmp_path: Path):
    dataset = load_image_qa(str(jsonl))
    # Replace the file after loading: a lazy dataset shows the new pixels, an eager one would show the old.
    _write_image(tmp_path / "imgs" / "0.png", "white")
    assert dataset[0]["image"].convert("RGB").getpixel((0, 0)) == (255, 255, 255)


def test_images_list_gives_one_image_part_per_image(tmp_path: Path):
    _write_image(tmp_path / "a.png", "red")
    _write_image(tmp_path / "sub" / "b.png", "blue")
    path = _write_jsonl(tmp_path / "pairs.jsonl", [{"images": ["a.png", "sub/b.png"], "question": "Q", "answer": "b"}])
    row = load_image_qa(str(path))[0]
    assert [part["type"] for part in row["prompt"][0]["content"]] == ["image", "image", "text"]
    assert [image.convert("RGB").getpixel((0, 0)) for image in row["images"]] == [(255, 0, 0), (0, 0, 255)]


def test_a_missing_image_fails_at_load_naming_row_and_path(jsonl: Path, tmp_path: Path):
    rows = [
        {"image": "imgs/0.png", "question": "Q", "answer": "a"},
        {"image": "imgs/gone.png", "question": "Q", "answer": "b"},
    ]
    path = _write_jsonl(tmp_path / "broken.jsonl", rows)
    with pytest.raises(ImageDataError, match=r"row 1: image file not found: .*imgs/gone\.png"):
        load_image_qa(str(path))


def test_an_unreadable_image_fails_at_load_naming_row_and_path(tmp_path: Path):
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"image": "bad.png", "question": "Q", "answer": "a"}])
    with pytest.raises(ImageDataError, match=r"row 0: unreadable image .*bad\.png"):
        load_image_qa(str(path))


def test_validation_can_be_skipped(tmp_path: Path):
    path = _write_jsonl(tmp_path / "lazy.jsonl", [{"image": "later.png", "question": "Q", "answer": "a"}])
    dataset = load_image_qa(str(path), validate=False)
    _write_image(tmp_path / "later.png")
    assert dataset[0]["image"].size == (16, 16)


def test_missing_columns_are_reported(tmp_path: Path):
    _write_image(tmp_path / "a.png")
    no_image = _write_jsonl(tmp_path / "no_image.jsonl", [{"question": "Q", "answer": "a"}])
    with pytest.raises(ImageDataError, match="no 'image' or 'images' column"):
        load_image_qa(str(no_image))
    no_answer = _write_jsonl(tmp_path / "no_answer.jsonl", [{"image": "a.png", "question": "Q"}])
    with pytest.raises(ImageDataError, match="'answer'"):
        load_image_qa(str(no_answer))


def test_a_directory_of_split_files_loads_by_split_name(tmp_path: Path):
    _write_image(tmp_path / "imgs" / "train.png", "red")
    _write_image(tmp_path / "imgs" / "test.png", "blue")
    _write_jsonl(tmp_path / "train.jsonl", [{"image": "imgs/train.png", "question": "Q", "answer": "red"}])
    _write_jsonl(tmp_path / "test.jsonl", [{"image": "imgs/test.png", "question": "Q", "answer": "blue"}])
    assert load_image_qa(str(tmp_path), split="test")["answer"] == ["blue"]
    assert load_image_qa(str(tmp_path), split="train", num_examples=5)["answer"] == ["red"]


def test_hub_style_dataset_with_embedded_images_loads_through_the_same_path(tmp_path: Path):
    """Columns as in R1-V's leonardPKU/clevr_cogen_a_train: image, problem, solution = '<answer> 3 </answer>'."""
    features = Features({"image": ImageFeature(), "problem": Value("string"), "solution": Value("string")})
    hub = Dataset.from_dict(
        {
            "image": [Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")],
            "problem": ["How many items are there in the image?"] * 2,
            "solution": ["<answer> 3 </answer>", "<answer>10</answer>"],
        },
        features=features,
    )
    (tmp_path / "data").mkdir()
    hub.to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))

    dataset = load_image_qa(
        str(tmp_path),
        question_column="problem",
        answer_column="solution",
        answer_pattern=ANSWER_TAG_PATTERN,
        instruction="Answer with a number.",
    )
    assert dataset["answer"] == ["3", "10"]
    assert dataset["solution"] == ["<answer>3</answer>", "<answer>10</answer>"]
    assert (
        dataset[0]["prompt"][0]["content"][1]["text"] == "How many items are there in the image? Answer with a number."
    )
    assert dataset[1]["image"].convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def test_an_answer_not_matching_the_pattern_is_reported(tmp_path: Path):
    _write_image(tmp_path / "a.png")
    path = _write_jsonl(tmp_path / "x.jsonl", [{"image": "a.png", "question": "Q", "answer": "no tags"}])
    with pytest.raises(ImageDataError, match="row 0: answer 'no tags' does not match"):
        load_image_qa(str(path), answer_pattern=ANSWER_TAG_PATTERN)


def test_an_image_feature_column_pointing_at_a_missing_file_fails_at_load(tmp_path: Path):
    """Image() columns may store paths instead of bytes; those are checked too (here in an `images` list)."""
    _write_image(tmp_path / "a.png")
    _write_image(tmp_path / "b.png")
    features = Features({"images": List(ImageFeature()), "question": Value("string"), "answer": Value("string")})
    rows = {
        "images": [[str(tmp_path / "a.png")], [str(tmp_path / "a.png"), str(tmp_path / "b.png")]],
        "question": ["Q", "Q"],
        "answer": ["a", "b"],
    }
    (tmp_path / "data").mkdir()
    Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    assert [len(row["prompt"][0]["content"]) for row in load_image_qa(str(tmp_path))] == [2, 3]

    (tmp_path / "b.png").unlink()
    with pytest.raises(ImageDataError, match=r"row 1: image file not found: .*b\.png"):
        load_image_qa(str(tmp_path))
