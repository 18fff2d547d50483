"""read_rows, the one reader of local data files: every unusable file is one line naming the key, the file and the
line; usable files of each type load."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset

from grpolab.data.task import DataError, read_rows

GOOD_LINE = b'{"prompt": "1+1=", "answer": "2"}\n'


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("rows.jsonl", GOOD_LINE + b'{"prompt": "1+2=", "answer": "3"\n' + GOOD_LINE,
         "': line 2 is not valid JSON: Expecting ',' delimiter (column 33)"),
        ("rows.jsonl", b"", "': the file is empty"),
        ("rows.jsonl", b"\n  \n\n", "': only blank lines, no rows"),
        ("rows.jsonl", GOOD_LINE + GOOD_LINE + b'{"prompt": "caf\xe9", "answer": "3"}\n',
         "': line 3 is not UTF-8 text (byte 0xe9 at column 16); save the file as UTF-8"),
        ("rows.jsonl", GOOD_LINE + b'"1+2="\n' + GOOD_LINE, "': line 2 is not a JSON object: \"1+2=\""),
        ("rows.json", b'[{"prompt": "1+1=", "answer": "2"},\n {"prompt": "1+2=" "answer": "3"}]\n',
         "': line 2 is not valid JSON: Expecting ',' delimiter (column 20)"),
        ("rows.csv", b"prompt,answer\n1+1=,2\n1+2=,3,9\n",
         "': cannot be read as csv: Error tokenizing data. C error: Expected 2 fields in line 3, saw 3"),
        ("rows.csv", b"prompt,answer\n1+1=,2\ncaf\xe9,3\n", "': line 3 is not UTF-8 text (byte 0xe9 at column 4)"),
        ("rows.parquet", b"PAR1 not parquet", "': cannot be read as parquet: "),
        ("rows.txt", GOOD_LINE, "': unsupported file type; use one of .jsonl, .json, .parquet, .csv"),
    ],
    ids=["malformed-line", "empty", "blank-lines", "not-utf8", "not-an-object", "json-array", "csv-fields",
         "csv-not-utf8", "not-parquet", "suffix"],
)
def test_an_unusable_file_is_one_line_naming_key_file_and_line(tmp_path: Path, name: str, content: bytes,
                                                               message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_rows(str(path), "data.path")
    assert str(error.value).startswith(f"data.path={str(path)!r}")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_missing_file_and_a_file_without_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^data.eval_path='nowhere.jsonl' is not a file$"):
        read_rows("nowhere.jsonl", "data.eval_path")
    Dataset.from_dict({"prompt": [], "answer": []}).to_parquet(tmp_path / "none.parquet")
    with pytest.raises(DataError, match=r"none\.parquet': no rows$"):
        read_rows(str(tmp_path / "none.parquet"), "data.path")


def test_every_file_type_loads(tmp_path: Path) -> None:
    rows = [{"prompt": "1+1=", "answer": "2"}, {"prompt": "1+2=", "answer": "3"}]
    (tmp_path / "a.jsonl").write_bytes(GOOD_LINE + b"\n" + b'{"prompt": "1+2=", "answer": "3"}\n')  # a blank line
    (tmp_path / "a.json").write_text('[{"prompt": "1+1=", "answer": "2"}, {"prompt": "1+2=", "answer": "3"}]')
    (tmp_path / "a.csv").write_text("prompt,answer\n1+1=,2\n1+2=,3\n")
    Dataset.from_list(rows).to_parquet(tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.json", "a.csv", "a.parquet"):
        loaded = read_rows(str(tmp_path / name), "data.path")
        assert [{key: str(value) for key, value in row.items()} for row in loaded] == rows, name
