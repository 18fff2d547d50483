"""Replace a generated block of a Markdown page (docs/*.md): what stands between ``<!-- <name>: start -->`` and
``<!-- <name>: end -->``. Every benchmark script that writes a table into a page goes through it."""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of the ``name`` block."""
    return f"<!-- {name}: start -->", f"<!-- {name}: end -->"


def has_block(text: str, name: str) -> bool:
    """Whether ``text`` has a ``name`` block (its start marker)."""
    return markers(name)[0] in text


def replace_block(text: str, name: str, block: str) -> str:
    """``text`` with the ``name`` block's content replaced by ``block``.

    >>> replace_block("a\\n<!-- t: start -->\\nold\\n<!-- t: end -->\\nb", "t", "new")
    'a\\n<!-- t: start -->\\nnew\\n<!-- t: end -->\\nb'
    >>> replace_block("- a\\n  <!-- t: start -->\\n  old\\n  <!-- t: end -->", "t", "  new")
    '- a\\n  <!-- t: start -->\\n  new\\n  <!-- t: end -->'
    """
    start, end = markers(name)
    if start not in text or end not in text.split(start, 1)[1]:
        raise ValueError(f"the file has no {start} ... {end} block to replace")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    before = head[head.rfind("\n") + 1:]
    indent = before if not before.strip() else ""  # a block in a list item: the end marker indented like the start
    return f"{head}{start}\n{block}\n{indent}{end}{tail}"


def write_block(readme: Path, name: str, block: str) -> None:
    """Replace the ``name`` block of the file ``readme`` in place."""
    readme.write_text(replace_block(readme.read_text(encoding="utf-8"), name, block), encoding="utf-8")
