"""``data=columns``: any dataset by its columns, from local JSONL, JSON, Parquet, CSV files and folders of them.

The loader is built from the real option file (``conf/data/columns.yaml``) with overrides, as a job builds it; the
end-to-end runs go through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra.utils import instantiate
from PIL import Image

from grpolab.data.task import DataError

ROWS = [{"question": f"What is {a} plus {a}?", "label": 2 * a, "worked": f"<answer>{2 * a}</answer>",
         "level": a % 3, "note": "unused"} for a in range(40)]
MAPPING = ["data.columns.prompt=question", "data.columns.answer=label", "data.eval_size=8"]


def write(rows: list[dict], path: Path) -> Path:
    """``rows`` as a file of the format its suffix names (a folder gets train.jsonl + test.jsonl)."""
    frame = pd.DataFrame(rows)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        path.mkdir()
        write(rows[:30], path / "train.jsonl")
        write(rows[30:], path / "test.jsonl")
    return path


@pytest.fixture
def load(compose_cfg):
    """load(*overrides) -> TaskSplits of the columns option, built as the job builds it."""

    def _load(*overrides: str):
        cfg = compose_cfg(["data=columns", *overrides])
        return instantiate(cfg.data).load()

    return _load


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.json", "rows.parquet", "rows.csv"])
def test_every_file_format_gives_the_usual_rows(load, tmp_path, name):
    path = write(ROWS, tmp_path / name)
    splits = load(f"data.path={path}", *MAPPING, "data.eval_size=8", "data.system_prompt=Answer briefly.")
    assert (len(splits.train), len(splits.eval)) == (32, 8)
    assert splits.train.column_names == ["prompt", "answer"]  # unmapped source columns are dropped
    row = splits.eval[0]
    source = next(r for r in ROWS if r["question"] == row["prompt"][1]["content"])
    assert row == {"prompt": [{"role": "system", "content": "Answer briefly."},
                              {"role": "user", "content": source["question"]}],
                   "answer": str(source["label"])}  # the integer label became the string answer
    questions = [p[1]["content"] for p in splits.train["prompt"]] + [p[1]["content"] for p in splits.eval["prompt"]]
    assert sorted(questions) == sorted(r["question"] for r in ROWS)  # disjoint, complete


def test_the_held_out_rows_depend_on_the_seed_only(load, tmp_path):
    path = write(ROWS, tmp_path / "rows.csv")
    first, again = (load(f"data.path={path}", *MAPPING, "data.eval_size=5") for _ in range(2))
    other = load(f"data.path={path}", *MAPPING, "data.eval_size=5", "data.seed=7")
    assert first.eval["prompt"] == again.eval["prompt"] != other.eval["prompt"]


def test_a_folder_gives_its_splits_by_file_name(load, tmp_path):
    path = write(ROWS, tmp_path / "folder")
    splits = load(f"data.path={path}", *MAPPING, "data.eval_split=test", "data.eval_size=100")
    assert (len(splits.train), len(splits.eval)) == (30, 10)
    assert splits.eval["answer"] == [str(r["label"]) for r in ROWS[30:]]  # held-out rows in file order
    with pytest.raises(DataError, match=r"^data\.path='.*folder' \(split 'validation'\) cannot be loaded: Unknown "
                                        r"split \"validation\"\. Should be one of \['train', 'test'\]\.$"):
        load(f"data.path={path}", *MAPPING, "data.eval_split=validation")


def test_a_separate_held_out_file_and_a_held_out_fraction(load, tmp_path):
    train, held_out = write(ROWS[:30], tmp_path / "train.parquet"), write(ROWS[30:], tmp_path / "eval.csv")
    splits = load(f"data.path={train}", f"data.eval_path={held_out}", *MAPPING, "data.eval_size=4",
                  "data.train_size=12")
    assert (len(splits.train), len(splits.eval)) == (12, 4)
    assert splits.eval["answer"] == [str(r["label"]) for r in ROWS[30:34]]
    fraction = load(f"data.path={train}", *MAPPING, "data.eval_fraction=0.2")
    assert (len(fraction.train), len(fraction.eval)) == (24, 6)
    capped = load(f"data.path={train}", *MAPPING, "data.eval_fraction=0.5", "data.eval_size=3")
    assert len(capped.eval) == 3


def test_plain_prompts_system_prompt_columns_solution_and_kept_columns(load, tmp_path):
    rows = [{**row, "persona": f"You are tutor {row['level']}."} for row in ROWS]
    path = write(rows, tmp_path / "rows.jsonl")
    plain = load(f"data.path={path}", *MAPPING, "data.conversational=false", "data.system_prompt=Be brief.",
                 "data.columns.solution=worked", "data.keep_columns=[level]")
    row = plain.train[0]
    source = next(r for r in rows if row["prompt"] == f"Be brief.\n{r['question']}")
    assert row == {"prompt": f"Be brief.\n{source['question']}", "answer": str(source["label"]),
                   "solution": source["worked"], "level": source["level"]}
    per_row = load(f"data.path={path}", *MAPPING, "data.columns.system_prompt=persona")
    for prompt in per_row.train["prompt"]:
        source = next(r for r in rows if r["question"] == prompt[1]["content"])
        assert prompt[0] == {"role": "system", "content": source["persona"]}


def test_a_column_of_chat_messages_is_used_as_it_is(load, tmp_path):
    rows = [{"messages": [{"role": "user", "content": r["question"]}], "label": r["label"]} for r in ROWS]
    path = write(rows, tmp_path / "chat.jsonl")
    splits = load(f"data.path={path}", "data.columns.prompt=messages", "data.columns.answer=label", "data.eval_size=8")
    assert all(len(p) == 1 and p[0]["role"] == "user" for p in splits.train["prompt"])
    with_system = load(f"data.path={path}", "data.columns.prompt=messages", "data.columns.answer=label",
                       "data.eval_size=8", "data.system_prompt=Be brief.")
    assert all(p[0] == {"role": "system", "content": "Be brief."} and len(p) == 2 for p in with_system.eval["prompt"])


def image_rows(folder: Path, count: int) -> list[dict]:
    (folder / "imgs").mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (16, 16), (10 * i, 0, 0)).save(folder / "imgs" / f"{i}.png")
    return [{"q": f"How red is picture {i}?", "a": i, "pic": f"imgs/{i}.png",
             "pics": [f"imgs/{i}.png", f"imgs/{(i + 1) % count}.png"]} for i in range(count)]


@pytest.mark.parametrize(("column", "name", "per_row"), [("pic", "image", 1), ("pics", "images", 2)])
def test_image_rows_are_chat_prompts_with_one_image_part_per_image(load, tmp_path, column, name, per_row):
    path = write(image_rows(tmp_path, 10), tmp_path / "images.jsonl")
    splits = load(f"data.path={path}", "data.columns.prompt=q", "data.columns.answer=a",
                  f"data.columns.images={column}", "data.eval_size=2", "data.system_prompt=Look closely.")
    assert splits.train.column_names == ["prompt", name, "answer"]
    row = splits.eval[0]
    system, user = row["prompt"]
    assert system == {"role": "system", "content": [{"type": "text", "text": "Look closely."}]}
    assert [part["type"] for part in user["content"]] == ["image"] * per_row + ["text"]
    images = row[name] if per_row > 1 else [row[name]]
    assert len(images) == per_row and images[0].size == (16, 16)  # relative paths resolved against the file's folder
    assert user["content"][-1]["text"] == f"How red is picture {row['answer']}?"


# -- one-line errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.columns.answer=answer"], "data.columns.answer='answer': no such column in {path}; "
                                         "its columns: question, label, worked, level, note"),
        (["data.keep_columns=[difficulty]"], "data.keep_columns: no column 'difficulty' in {path}; "
                                             "its columns: question, label, worked, level, note"),
        (["+data.columns.hint=note"], "data.columns.hint: no such role; valid: prompt, answer, solution, images, "
                                      "system_prompt"),
        (["data.columns.prompt=null"], "data.columns.prompt is required: the source column holding the prompt"),
        (["data.system_prompt=S", "data.columns.system_prompt=note"],
         "data.system_prompt and data.columns.system_prompt are both set; keep one"),
        (["data.conversational=false", "data.columns.images=note"],
         "data.conversational=false, but image rows need chat prompts"),
        (["data.eval_fraction=1.5"], "data.eval_fraction=1.5 must be in (0, 1), or null (eval_size rows)"),
        (["data.eval_path={path}", "data.eval_split=train"], "data.eval_split=train is data.split: the held-out rows "
                                                              "would be training rows"),
        (["data.eval_split=test"], "data.eval_split=test: data.path='{path}' is one file, which has no splits; set "
                                   "data.eval_path to a held-out file, or carve rows with data.eval_size / "
                                   "data.eval_fraction"),
        (["data.eval_size=40"], "data.eval_size=40 leaves no training rows in 40 usable rows"),
    ],
)
def test_bad_settings_fail_in_one_line(load, tmp_path, overrides, message):
    path = write(ROWS, tmp_path / "rows.csv")
    with pytest.raises(DataError) as error:
        load(f"data.path={path}", *MAPPING, *(override.format(path=path) for override in overrides))
    assert str(error.value).startswith(message.format(path=path)) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("missing.jsonl", "data.path='missing.jsonl' is not a file or folder"),
        ("./no/such/folder", "data.path='./no/such/folder' is not a file or folder"),
        ("pictures/0.png", "data.path='pictures/0.png': unsupported file type; use one of .jsonl, .json, .parquet, "
                           ".csv, a folder of them or a hub dataset id"),
    ],
)
def test_a_missing_or_unreadable_source_fails_in_one_line(load, tmp_path, monkeypatch, path, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pictures").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "pictures" / "0.png")
    with pytest.raises(DataError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load(f"data.path={path}", *MAPPING)


def test_bad_rows_are_named_by_their_row_in_the_source(load, tmp_path):
    rows = [dict(row) for row in ROWS]
    rows[7]["label"] = None
    path = write(rows, tmp_path / "rows.jsonl")
    with pytest.raises(DataError, match=r"^.*rows\.jsonl: row 7: data\.columns\.answer='label' "
                                        r"is empty$"):
        load(f"data.path={path}", *MAPPING)
    images = image_rows(tmp_path / "imgs_set", 4)
    images[2]["pic"] = "imgs/gone.png"
    image_file = write(images, tmp_path / "imgs_set" / "images.jsonl")
    with pytest.raises(DataError, match=r"^data\.columns\.images='pic': .*row 2: image file not found: .*gone\.png$"):
        load(f"data.path={image_file}", "data.columns.prompt=q", "data.columns.answer=a", "data.columns.images=pic",
             "data.eval_size=1")


# -- through the CLI ------------------------------------------------------------------------------------------------


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["text", "ids"])
def test_a_csv_trains_with_a_warm_start_from_its_solution_column(run_job, tmp_path, mode):
    rows = [{"q": f"{a}+{b}=", "sum": a + b, "target": f"<answer>{a + b}</answer>"} for a in range(9) for b in range(9)]
    path = write(rows, tmp_path / "sums.csv")
    result = run_job("logger=none", "data=columns", f"data.path={path}", "data.columns.prompt=q",
                     "data.columns.answer=sum", "data.columns.solution=target", "data.conversational=false",
                     "data.eval_size=16", f"tokenizer_mode={mode}", "warmstart.steps=10", "trainer.max_steps=2",
                     "batch.prompts_per_step=4", "batch.generations_per_prompt=4")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(tmp_path / "run")
    assert summary["status"] == "completed" and summary["steps"] == 2 and summary["warmstart"]["steps"] == 10
    assert summary["eval_after"]["num_samples"] == 16


@pytest.mark.slow
def test_image_rows_train_the_tiny_vision_model(run_job, tmp_path):
    path = write(image_rows(tmp_path, 12), tmp_path / "images.jsonl")
    result = run_job("logger=none", "model=tiny_vlm", "data=columns", f"data.path={path}", "data.columns.prompt=q",
                     "data.columns.answer=a", "data.columns.images=pics", "data.system_prompt=Look.",
                     "data.eval_size=4", "warmstart=none", "trainer.max_steps=1", "batch.prompts_per_step=2",
                     "batch.generations_per_prompt=2")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(tmp_path / "run")
    assert summary["status"] == "completed" and summary["eval_after"]["num_samples"] == 4


@pytest.mark.slow
def test_a_missing_column_stops_the_job_in_one_line_before_any_model(run_job, tmp_path):
    path = write(ROWS, tmp_path / "rows.parquet")
    result = run_job("logger=none", "warmstart=none", "data=columns", f"data.path={path}", "data.columns.prompt=q")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("grpolab:")]
    assert errors == [f"grpolab: config error: data.columns.prompt='q': no such column in {path}; "
                      "its columns: question, label, worked, level, note"]
