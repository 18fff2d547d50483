"""benchmarks/readme_block.py, which every benchmark script that writes a table into a page goes through, and the
generated blocks of README.md and docs/*.md: each one is closed, on one page, and its name leads to the script that
writes it."""

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


def generated_blocks() -> dict[str, list[str]]:
    """Page (README.md, docs/*.md) -> the names of its generated blocks."""
    pages = [README, *sorted((BENCHMARKS.parent / "docs").glob("*.md"))]
    return {page.relative_to(BENCHMARKS.parent).as_posix(): re.findall(r"<!-- (.+?): start -->",
                                                                       page.read_text(encoding="utf-8"))
            for page in pages}


def test_every_generated_block_is_closed_and_written_by_a_benchmark_script():
    blocks = generated_blocks()
    assert any(blocks.values()), "no page has generated blocks"
    scripts = {path.stem: path.read_text(encoding="utf-8") for path in BENCHMARKS.glob("*.py")}
    for page, names in blocks.items():
        text = (BENCHMARKS.parent / page).read_text(encoding="utf-8")
        for name in names:
            assert text.count(f"<!-- {name}: start -->") == 1 and text.count(f"<!-- {name}: end -->") == 1, (page, name)
            # The block's first word is its script (readme_figures builds the rest of its names), or a script names it.
            writers = [stem for stem, code in scripts.items()
                       if f'"{name}"' in code or (stem == name.split()[0] and "readme_block" in code)]
            assert writers, f"{page}: block {name!r}: no script in benchmarks/ writes it"
            inside = text.split(f"<!-- {name}: start -->", 1)[1].split(f"<!-- {name}: end -->", 1)[0]
            assert inside.strip(), f"{page}: block {name!r} is empty: run benchmarks/{writers[0]}.py"


def test_each_block_lives_on_one_page_the_one_its_script_writes():
    """A script writes one page: a block copied onto a second page would silently go stale there."""
    pages: dict[str, list[str]] = {}
    for page, names in generated_blocks().items():
        for name in names:
            pages.setdefault(name, []).append(page)
    assert {name: where for name, where in pages.items() if len(where) > 1} == {}
    import processor_variation
    import readme_figures
    import suite_time

    for script, names in ((readme_figures, ["readme_figures default", "readme_figures vision"]),
                          (processor_variation, [processor_variation.BLOCK]), (suite_time, [suite_time.BLOCK])):
        where = script.DOC.relative_to(BENCHMARKS.parent).as_posix()
        assert all(pages[name] == [where] for name in names), (script.__name__, where)
