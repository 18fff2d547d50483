"""Structure figures of ``src/`` at one or more git revisions: size, branching on modality / tokenizer mode, where
TRL's private methods are overridden, the composition root's length, repeated blocks.

    python benchmarks/structure.py                   # the working tree
    python benchmarks/structure.py e5b1274 HEAD      # before/after, one column per revision

Branches are counted on the syntax tree: an ``if``/``elif``/``while``/conditional expression/comprehension filter
whose condition picks between a text and an image path (images present, a processor, the modality) or between the
text and the ID path (ID prompts, the tokenizer mode, lazy decoding); the patterns are below. "Repeated blocks" is the pair count the
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
# A condition that picks a text or an image path: images present or not, a processor or a tokenizer, the modality.
MODALITY = re.compile(r"has_images|image_column\(|IMAGE_GRID\b.* in |\bin .*IMAGE_GRID|image_token is None|images is "
                      r"(not )?None|_batch_images|modality|Modality\.|ProcessorMixin|is_vlm|VISION|\bvision\b")
# A condition that picks the text or the ID path: ID prompts or not, the tokenizer mode, lazy decoding.
TOKENIZER_MODE = re.compile(r"is_token_ids|TokenizerMode|tokenizer_mode|ids_mode|PROMPT_IDS\b.* in |"
                            r"\bin .*PROMPT_IDS|['\"]prompt_ids['\"] in|\bmode\b(?! ==? RunMode)")


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
    modality_files: set[str] = set()
    mode_files: set[str] = set()
    overrides: dict[str, set[str]] = {}
    train_length = "n/a"
    longest = (0, "")
    for path in files:
        text = path.read_text(encoding="utf-8")
        lines += len(text.splitlines())
        tree = ast.parse(text)
        name = str(path.relative_to(root / "src" / "grpolab"))
        for test in conditions(tree):
            source = ast.unparse(test)
            if MODALITY.search(source):
                modality += 1
                modality_files.add(name)
            if TOKENIZER_MODE.search(source):
                mode += 1
                mode_files.add(name)
        found = private_overrides(tree, trl_private)
        if found:
            overrides[str(path.relative_to(root / "src"))] = found
        if path.name == "train.py" and path.parent.name == "grpolab":
            train_length = ", ".join(f"{node.name} {node.end_lineno - node.lineno + 1}" for node in tree.body
                                     if isinstance(node, ast.FunctionDef))
        longest = max(longest, (len(text.splitlines()), name))
    methods = set().union(*overrides.values()) if overrides else set()
    override_count = sum(len(names) for names in overrides.values())
    train_py = root / "src" / "grpolab" / "train.py"
    return {
        "lines in src/grpolab": str(lines),
        "modules": str(len(files)),
        "conditions on modality (files)": f"{modality} ({len(modality_files)}: {', '.join(sorted(modality_files))})",
        "conditions on tokenizer mode (files)": f"{mode} ({len(mode_files)}: {', '.join(sorted(mode_files))})",
        "TRL private methods overridden (distinct / overrides)": f"{len(methods)} / {override_count}",
        "files overriding them": str(len(overrides)),
        "train.py lines": str(len(train_py.read_text(encoding="utf-8").splitlines())),
        "train.py functions (lines)": train_length,
        "longest module (lines)": f"{longest[1]} ({longest[0]})",
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
