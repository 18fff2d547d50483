"""Collect every wheel grpolab needs beyond torch into one folder, so a GPU node without internet can install it.

    python tools/collect_wheels.py /tmp/grpolab-wheels                # constraints.txt minus torch, + grpolab's wheel
    python tools/collect_wheels.py /tmp/grpolab-wheels --extras gpu   # + the gpu extra (DeepSpeed, vLLM, flash-attn)
    python tools/collect_wheels.py DIR --python-version 3.12 --platform manylinux_2_28_x86_64   # for another node

Then on the node, with torch installed (or its CUDA wheel in DIR or another --find-links folder):

    pip install --no-index --find-links DIR -c constraints.txt 'grpolab[test]'
    python benchmarks/gpu_check.py --write docs/gpu_check.md

What is collected: every pin of ``constraints.txt`` (the exact versions the tests and figures were run with, the
closure of grpolab's requirements and its ``test`` extra) except torch and its own CUDA stack (torchvision,
torchaudio, triton, nvidia-*), which a GPU node takes from its CUDA build; each as a wheel for the target Python
and platform (``pip download --only-binary``), or, for a release published only as a source archive, as a wheel
built here (pure-Python ones are platform-free); grpolab's own wheel, built from this checkout; with ``--extras
gpu``, the ``gpu`` extra's packages and everything they pull in (vLLM pins its own torch: the download includes it).
Prints what it collected, its size and what failed; exit 1 when something failed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "constraints.txt"
#: torch and the packages that come with a CUDA build of it: the node installs them from that build.
TORCH_STACK = re.compile(r"^(torch|torchvision|torchaudio|triton|pytorch-triton.*|nvidia-.*)$")


def pins(lock: Path = LOCK) -> list[str]:
    """``name==version`` of every package of the lock but torch's stack.

    >>> [pin for pin in pins() if pin.startswith(("torch", "trl", "nvidia"))]
    ['trl==1.16.0']
    """
    lines = [line.strip() for line in lock.read_text(encoding="utf-8").splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    return [pin for pin in requirements if not TORCH_STACK.match(pin.split("==")[0])]


def target_options(python_version: str | None, platform: str | None) -> list[str]:
    """pip's options for wheels of another interpreter or platform than this one.

    >>> target_options("3.12", "manylinux_2_28_x86_64")
    ['--python-version', '3.12', '--platform', 'manylinux_2_28_x86_64', '--implementation', 'cp']
    """
    options = []
    if python_version:
        options += ["--python-version", python_version]
    if platform:
        options += ["--platform", platform]
    return [*options, "--implementation", "cp"] if options else []


def pip(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *arguments], capture_output=True, text=True)


def collect_pin(pin: str, folder: Path, target: list[str]) -> str | None:
    """Download ``pin``'s wheel, else build one from its source archive; None, or why it failed (one line)."""
    downloaded = pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(folder), *target, pin)
    if downloaded.returncode == 0:
        return None
    built = pip("wheel", "--no-deps", "--wheel-dir", str(folder), pin)
    if built.returncode == 0:
        return None
    return f"{pin}: {last_line(downloaded.stderr)}; building it: {last_line(built.stderr)}"


def collect_extra(requirement: str, folder: Path, target: list[str]) -> str | None:
    """Download ``requirement`` and everything it needs (the lock's versions where they overlap)."""
    downloaded = pip("download", "--only-binary=:all:", "--dest", str(folder), "-c", str(LOCK), *target, requirement)
    return None if downloaded.returncode == 0 else f"{requirement}: {last_line(downloaded.stderr)}"


def build_own_wheel(folder: Path) -> str | None:
    """grpolab's wheel from this checkout, leaving no build folders behind in it."""
    leftovers = [path for path in (REPO / "build", REPO / "src" / "grpolab.egg-info") if not path.exists()]
    try:
        built = pip("wheel", "--no-deps", "--wheel-dir", str(folder), str(REPO))
    finally:
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
    return None if built.returncode == 0 else f"grpolab (this checkout): {last_line(built.stderr)}"


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1][:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the wheels go (created; wheels already there are kept)")
    parser.add_argument("--extras", default="", help="comma-separated extras of grpolab to add with their "
                        "dependencies, e.g. gpu")
    parser.add_argument("--python-version", help="the node's Python, e.g. 3.12 (default: this interpreter's)")
    parser.add_argument("--platform", help="the node's platform tag, e.g. manylinux_2_28_x86_64 (default: this "
                        "machine's)")
    parser.add_argument("--jobs", type=int, default=4, help="downloads at a time")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    target = target_options(args.python_version, args.platform)
    locked = pins()
    with ThreadPoolExecutor(args.jobs) as pool:
        failures = [error for error in pool.map(lambda pin: collect_pin(pin, args.folder, target), locked) if error]
    failures += [error for error in [build_own_wheel(args.folder)] if error]
    extras = [extra for extra in args.extras.split(",") if extra]
    optional = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    for extra in extras:
        failures += [error for requirement in optional[extra] if (error := collect_extra(
            requirement, args.folder, target))]
    wheels = sorted(args.folder.glob("*.whl"))
    size = sum(wheel.stat().st_size for wheel in wheels)
    print(f"collect_wheels: {len(wheels)} wheels, {size / 2**20:,.1f} MiB in {args.folder} ({len(locked)} pins of "
          f"{LOCK.name} without torch's stack, grpolab's own wheel{', extras ' + ','.join(extras) if extras else ''})")
    for failure in failures:
        print(f"collect_wheels: FAILED {failure}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
