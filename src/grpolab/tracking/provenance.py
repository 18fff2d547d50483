"""Where a run came from, as ``manifest.json`` records it: the git checkout, the command as typed, the installed
package versions and how they compare with the version lock (``constraints.txt``).

Reads package metadata only (never imports torch or transformers to ask their versions).
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: The version lock at the top of a grpolab checkout (``pip install -c constraints.txt ...``).
LOCK_FILE = "constraints.txt"

# Distribution names as on PyPI; "python" is filled from the interpreter.
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "accelerate",
    "datasets",
    "hydra-core",
    "omegaconf",
    "wandb",
    "math-verify",
    "grpolab",
)


def git_state(start: Path) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout containing ``start``; nulls outside git or without git.

    Read-only: ``--no-optional-locks`` stops ``git status`` from refreshing the index of a checkout that another
    process (or the user) may be using.
    """
    unknown: dict[str, Any] = {"commit": None, "dirty": None, "root": None}
    directory = start if start.is_dir() else start.parent
    if not any((parent / ".git").exists() for parent in (directory, *directory.parents)):
        return unknown

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "--no-optional-locks", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
        ).stdout.strip()

    try:
        root = git("rev-parse", "--show-toplevel")
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return unknown
    return {"commit": commit, "dirty": dirty, "root": root}


def typed_command() -> list[str]:
    """The command as the user typed it, e.g. ``['python', '-m', 'grpolab.train', 'model=tiny']``.

    ``sys.orig_argv`` holds the interpreter and its options as given, where ``sys.argv[0]`` is only the path of
    ``train.py`` (and ``sys.argv`` may carry what preflight added, such as a resumed sweep's directory). A console
    script is named as found on PATH (``grpolab-train model=tiny``), not by the interpreter and path its ``#!`` line
    expands to. A sweep's worker process (joblib's loky) inherits the launching process's ``sys.argv`` but has its own
    ``orig_argv``: its command is rebuilt from ``sys.argv`` and ``sys.executable`` (interpreter options are lost there).
    """
    argv = list(sys.argv)
    started_here = _started_with(argv[0])
    if _is_console_script(argv[0]):
        orig = list(sys.orig_argv)
        arguments = orig[orig.index(argv[0]) + 1:] if started_here and argv[0] in orig else argv[1:]
        return [_name_on_path(argv[0]), *arguments]
    if started_here:
        return list(sys.orig_argv)
    module = _grpolab_module(argv[0])
    return [sys.executable, *(["-m", module] if module else argv[:1]), *argv[1:]]


def _started_with(argv0: str) -> bool:
    """Whether this process runs ``argv0`` itself, rather than being a worker that inherited ``sys.argv``."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is None:
        return True  # python -c / an interactive session
    return Path(main_file).resolve() == Path(argv0).resolve()


def _is_console_script(path: str) -> bool:
    """An entry-point script such as ``grpolab-train``: no ``.py`` suffix, run through its ``#!`` line."""
    try:
        with open(path, "rb") as handle:
            return not path.endswith(".py") and handle.read(2) == b"#!"
    except OSError:
        return False


def _name_on_path(path: str) -> str:
    """``grpolab-train`` when that name on PATH is this script; the path otherwise."""
    found = shutil.which(Path(path).name)
    return Path(path).name if found and Path(found).resolve() == Path(path).resolve() else path


def _grpolab_module(path: str) -> str | None:
    """``grpolab.train`` for the path of ``grpolab/train.py``; None for a file outside the grpolab package."""
    import grpolab

    package_parent = Path(grpolab.__file__).resolve().parents[1]
    try:
        relative = Path(path).resolve().relative_to(package_parent)
    except ValueError:
        return None
    return ".".join(relative.with_suffix("").parts) if relative.suffix == ".py" else None


def lock_state(lock_file: Path | None = None) -> dict[str, Any]:
    """The version lock next to the grpolab checkout (``constraints.txt``): its hash and every pinned package whose
    installed version differs (``pip install -c constraints.txt`` makes that empty); nulls when there is no lock
    (grpolab installed from a wheel).

    >>> lock_state()  # doctest: +SKIP
    {'file': '/src/grpolab/constraints.txt', 'sha256': '4f1c...', 'differs': {}}
    """
    if lock_file is None:
        import grpolab

        lock_file = Path(grpolab.__file__).resolve().parents[2] / LOCK_FILE  # src/grpolab/__init__.py -> the checkout
    try:
        text = lock_file.read_bytes()
    except OSError:
        return {"file": None, "sha256": None, "differs": {}}
    differs: dict[str, dict[str, str | None]] = {}
    for name, locked in parse_pins(text.decode("utf-8")).items():
        try:
            installed: str | None = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        # A local label (torch 2.13.0+cpu) satisfies a pin without one, as it does for pip.
        if installed is None or installed.split("+")[0] != locked.split("+")[0]:
            differs[name] = {"locked": locked, "installed": installed}
    return {"file": str(lock_file), "sha256": hashlib.sha256(text).hexdigest(), "differs": differs}


def parse_pins(text: str) -> dict[str, str]:
    r"""``name==version`` lines of a constraints file (comments, blank lines and other specifiers skipped).

    >>> parse_pins("# lock\ntorch==2.13.0  # cpu\nnumpy>=2\n")
    {'torch': '2.13.0'}
    """
    pins = {}
    for line in text.splitlines():
        name, separator, version = line.split("#", 1)[0].strip().partition("==")
        if separator and name.strip() and version.strip():
            pins[name.strip()] = version.strip()
    return pins


def package_versions() -> dict[str, str | None]:
    """Installed versions from package metadata (importing torch just to ask its version would cost seconds)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
