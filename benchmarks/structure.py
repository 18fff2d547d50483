"""Structure figures of ``src/`` at one or more git revisions: size, branching on modality / tokenizer mode, where
TRL's private methods are overridden, the composition root's length, repeated blocks.

    python benchmarks/structure.py                   # the working tree
    python benchmarks/structure.py e5b1274 HEAD      # before/after, one column per revision

Branches are counted on the syntax tree: an ``if``/``elif``/``while``/conditional expression/comprehension filter
whose condition names something modality-specific (images, pixels, vision, the Modality enum) or tokenizer-mode-
specific (token-ID prompts, the TokenizerMode enum, lazy decoding). "Repeated blocks" is the pair count the
``duplicates`` tool reports for ``src/`` (six or more shared lines). Needs git, and trl for the list of
``GRPOTrainer`` methods.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODALITY = re.compile(r"image|pixel|vision|modality|IMAGE_GRID|PIXEL_VALUES", re.IGNORECASE)
TOKENIZER_MODE = re.compile(r"token_ids|TokenizerMode|tokenizer_mode|lazy_decoding|PROMPT_IDS|prompt_ids|\.mode\b")


def checkout(revision: str | None, into: Path) -> Path:
    """The tree of ``revision`` (None: the working tree) as a folder."""
    if revision is None:
        return REPO
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "src", "conf", "experiments"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def conditions(tree: ast.AST) -> list[ast.AST]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.While, ast.IfExp)):
            found.append(node.test)
        elif isinstance(node, ast.comprehension):
            found.extend(node.ifs)
    return found


def private_overrides(tree: ast.AST, trl_private: set[str]) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            names |= {item.name for item in node.body if isinstance(item, ast.FunctionDef) and item.name in trl_private}
    return names


def duplicate_pairs(src: Path) -> str:
    if shutil.which("duplicates") is None:
        return "n/a (no duplicates tool)"
    output = subprocess.run(["duplicates", "--repo", str(src), "--most", "1", "--seconds", "60"],
                            capture_output=True, text=True).stdout
    first = output.splitlines()[0] if output else ""
    match = re.match(r"(\d+) pairs?", first)
    return match.group(1) if match else ("0" if first.startswith("no duplicates") else first)


def measure(root: Path, trl_private: set[str]) -> dict[str, str]:
    files = sorted((root / "src" / "grpolab").rglob("*.py"))
    lines = modality = mode = 0
    overrides: dict[str, set[str]] = {}
    train_length = "n/a"
    for path in files:
        text = path.read_text(encoding="utf-8")
        lines += len(text.splitlines())
        tree = ast.parse(text)
        for test in conditions(tree):
            source = ast.unparse(test)
            modality += bool(MODALITY.search(source))
            mode += bool(TOKENIZER_MODE.search(source))
        found = private_overrides(tree, trl_private)
        if found:
            overrides[str(path.relative_to(root / "src"))] = found
        if path.name == "train.py" and path.parent.name == "grpolab":
            for node in tree.body:
                if isinstance(node, ast.FunctionDef) and node.name == "train":
                    train_length = str(node.end_lineno - node.lineno + 1)
    methods = set().union(*overrides.values()) if overrides else set()
    override_count = sum(len(names) for names in overrides.values())
    train_py = root / "src" / "grpolab" / "train.py"
    return {
        "lines in src/grpolab": str(lines),
        "modules": str(len(files)),
        "conditions on modality": str(modality),
        "conditions on tokenizer mode": str(mode),
        "TRL private methods overridden (distinct / overrides)": f"{len(methods)} / {override_count}",
        "files overriding them": str(len(overrides)),
        "train.py lines": str(len(train_py.read_text(encoding="utf-8").splitlines())),
        "train() lines": train_length,
        "repeated blocks (>= 6 lines) in src/": duplicate_pairs(root / "src"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="*", help="git revisions (default: the working tree)")
    revisions = parser.parse_args().revisions or [None]
    from trl import GRPOTrainer

    trl_private = {name for name in dir(GRPOTrainer) if name.startswith("_") and not name.startswith("__")}
    columns = []
    for revision in revisions:
        with tempfile.TemporaryDirectory() as folder:
            columns.append(measure(checkout(revision, Path(folder)), trl_private))
    names = [revision or "working tree" for revision in revisions]
    print("| figure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key in columns[0]:
        print(f"| {key} | " + " | ".join(column[key] for column in columns) + " |")


if __name__ == "__main__":
    sys.exit(main())
