"""Write ``constraints.txt``: the exact version of every package ``pip install -e ".[test]"`` installs, read from the
environment this runs in (the one the figures in docs/ were measured in).

    python tools/write_constraints.py            # rewrite constraints.txt at the top of the checkout
    python tools/write_constraints.py --check    # exit 1 when this environment differs from constraints.txt

The pins are the closure of grpolab's requirements (``pyproject.toml``'s dependencies plus the ``--extras``, default
``test``): each installed distribution's own requirements are followed where their markers hold here. A local
version label is dropped (``torch==2.13.0``, not ``2.13.0+cpu``), so the CPU wheel and a CUDA build of the same
release both satisfy the lock. The README's install and test commands use it (``pip install -c constraints.txt``),
and every run records its hash and any package installed at another version in ``manifest.json`` (``lock``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "constraints.txt"


def installed_closure(requirements: list[str]) -> dict[str, str]:
    """``{name: version}`` of every installed distribution the requirements reach (markers evaluated here)."""
    pinned: dict[str, str] = {}
    queue = [(Requirement(text), ()) for text in requirements]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while queue:
        requirement, extras = queue.pop()
        environment = default_environment()
        if requirement.marker is not None and not any(
                requirement.marker.evaluate({**environment, "extra": extra}) for extra in (extras or ("",))):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, tuple(sorted(requirement.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"write_constraints: {requirement} is required but not installed in {sys.prefix}")
        pinned[name] = distribution.version.split("+")[0]
        queue += [(Requirement(text), tuple(sorted(requirement.extras))) for text in distribution.requires or ()]
    return pinned


def lock_text(extras: list[str]) -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [*project["dependencies"]]
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins = installed_closure(requirements)
    header = [
        "# The exact versions grpolab's README figures and tests were run with: pip install -c constraints.txt ...",
        f"# Written by tools/write_constraints.py (extras: {','.join(extras) or 'none'}) from Python "
        f"{platform.python_version()} on {platform.system()} {platform.machine()}; rerun it to update, do not edit.",
    ]
    return "\n".join([*header, *(f"{name}=={version}" for name, version in sorted(pins.items()))]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="test", help="comma-separated extras of grpolab to include (default: test)")
    parser.add_argument("--check", action="store_true", help="compare with constraints.txt instead of writing it")
    args = parser.parse_args()
    text = lock_text([extra for extra in args.extras.split(",") if extra])
    if args.check:
        current = LOCK.read_text(encoding="utf-8") if LOCK.exists() else ""
        pins = [line for line in text.splitlines() if not line.startswith("#")]
        locked = [line for line in current.splitlines() if not line.startswith("#")]
        if pins != locked:
            sys.exit("constraints.txt differs from this environment:\n" + "\n".join(
                f"  {line}" for line in sorted(set(pins) ^ set(locked))))
        print(f"constraints.txt matches this environment ({len(pins)} packages)")
        return
    LOCK.write_text(text, encoding="utf-8")
    print(f"wrote {LOCK} ({text.count(chr(10)) - 2} packages)")


if __name__ == "__main__":
    main()
