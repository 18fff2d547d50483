"""benchmarks/readme_block.py, which every benchmark script that writes README figures goes through, and the README's
generated blocks: each one is closed, and its name leads to the script that writes it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
README = BENCHMARKS.parent / "README.md"
sys.path.insert(0, str(BENCHMARKS))

from readme_block import replace_block  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def test_a_block_inside_a_list_item_keeps_its_indentation_and_the_rest_of_the_file():
    text = "- item\n\n  <!-- t: start -->\n  old\n  <!-- t: end -->\n\n  more of the item\n"
    once = replace_block(text, "t", "  | a |\n  |---|")
    assert once == "- item\n\n  <!-- t: start -->\n  | a |\n  |---|\n  <!-- t: end -->\n\n  more of the item\n"
    assert replace_block(once, "t", "  | a |\n  |---|") == once


def test_a_missing_block_is_an_error_not_a_silent_no_op():
    with pytest.raises(ValueError, match="no <!-- t: start -->"):
        replace_block("<!-- t: end -->\n<!-- t: start -->", "t", "new")


def test_every_generated_readme_block_is_closed_and_written_by_a_benchmark_script():
    text = README.read_text(encoding="utf-8")
    starts = re.findall(r"<!-- (.+?): start -->", text)
    assert starts, "README.md has no generated blocks"
    scripts = {path.stem: path.read_text(encoding="utf-8") for path in BENCHMARKS.glob("*.py")}
    for name in starts:
        assert text.count(f"<!-- {name}: start -->") == 1 and text.count(f"<!-- {name}: end -->") == 1, name
        # The block's first word is its script (readme_figures builds the rest of its names), or a script names it.
        writers = [stem for stem, code in scripts.items()
                   if f'"{name}"' in code or (stem == name.split()[0] and "readme_block" in code)]
        assert writers, f"block {name!r}: no script in benchmarks/ writes it"
        inside = text.split(f"<!-- {name}: start -->", 1)[1].split(f"<!-- {name}: end -->", 1)[0]
        assert inside.strip(), f"block {name!r} is empty: run benchmarks/{writers[0]}.py --readme README.md"
