"""Build (or find cached) the userland and VM image of a matrix release.

    python3 tests/distros/build.py RELEASE [--image]   -> prints its directory

Each release lives in $SOCKTRACE_MATRIX_CACHE/RELEASE (default
/var/cache/socktrace-matrix): rootfs/ from build-rootfs.sh, and with
--image the VM's root.img and boot/ from tests/vm/build-image.sh.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = HERE.parent.parent
sys.path.insert(0, str(HERE))
from matrix import APPS, APPS_BASE, APPS_SUITE, Release, release  # noqa: E402

CACHE = Path(os.environ.get("SOCKTRACE_MATRIX_CACHE", "/var/cache/socktrace-matrix"))


class BuildError(Exception):
    pass


def venv_packages(python: str) -> str:
    """The project's dependencies and test extras (pyproject.toml) that
    apply to a release's Python ("3.9"), for its test VM's venv: markers
    evaluated here (pip gets words, not quoted requirements).

    >>> "tomli" in venv_packages("3.9"), "tomli" in venv_packages("3.11")
    (True, False)
    """
    try:
        import tomllib
    except ImportError:  # Python < 3.11: pip's vendored copy of the same parser
        from pip._vendor import tomli as tomllib
    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
    with open(TOP / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    wanted = []
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"python_version": python}):
            req.marker = None
            wanted.append(str(req))
    return " ".join(wanted)


def _run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return r.stdout


def build(rel: Release, image: bool = False) -> tuple[Path, str]:
    """(the release's directory, what the builders said)."""
    out = CACHE / rel.name
    said = _run([str(HERE / "build-rootfs.sh"), str(out)], env={
        "SUITE": rel.suite, "PACKAGES": " ".join(rel.packages),
        "BACKPORTS": " ".join(rel.backports), "PROVISION": "1" if rel.provision else "",
        "APPS": " ".join(rel.bench),
        "VENV": venv_packages(rel.python) if rel.kernels else ""})
    if image:
        said += _run([str(TOP / "tests/vm/build-image.sh"), str(out)])
    return out, said


def build_apps() -> Path:
    """The servers' userland (tests/apps): its root directory."""
    out = CACHE / "apps"
    _run([str(HERE / "build-rootfs.sh"), str(out)], env={
        "SUITE": APPS_SUITE, "PACKAGES": " ".join(APPS_BASE), "APPS": " ".join(APPS)})
    return out / "rootfs"


if __name__ == "__main__":
    try:
        out, said = build(release(sys.argv[1]), image="--image" in sys.argv[2:])
    except (BuildError, StopIteration, IndexError) as exc:
        sys.exit(f"build.py: {exc or 'usage: build.py RELEASE [--image]'}")
    sys.stderr.write(said)
    print(out)
