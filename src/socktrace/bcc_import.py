"""Find bcc's Python module, which the distribution ships, not PyPI.

Debian/Ubuntu's python3-bpfcc and Fedora's python3-bcc install it into the
system Python's package directory, invisible to a virtualenv or to another
Python build.  The module is pure Python over libbcc.so (ctypes), so any
Python 3 can load it from there; only the `bcc` package itself is loaded,
not the rest of that directory.
"""

from __future__ import annotations

import glob
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

INSTALL_HINT = ("install bcc's Python module: apt-get install python3-bpfcc "
                "(Debian/Ubuntu) or dnf install python3-bcc (Fedora)")
# the oldest bcc in the test matrix (Debian 11; tests/distros/matrix.py)
OLDEST_BCC = (0, 18)

SYSTEM_PACKAGE_DIRS = (
    "/usr/lib/python3/dist-packages",          # Debian, Ubuntu
    "/usr/lib/python3*/site-packages",         # Fedora, Arch
    "/usr/lib64/python3*/site-packages",       # Fedora, RHEL
    "/usr/local/lib/python3*/dist-packages",   # bcc built from source
)


class BccMissing(Exception):
    pass


def find_bcc_dir(patterns: tuple[str, ...] = SYSTEM_PACKAGE_DIRS) -> Path | None:
    for pattern in patterns:
        for d in sorted(glob.glob(pattern), reverse=True):
            pkg = Path(d) / "bcc"
            if (pkg / "__init__.py").is_file():
                return pkg
    return None


def import_bcc(patterns: tuple[str, ...] = SYSTEM_PACKAGE_DIRS) -> ModuleType:
    """Return the `bcc` module, importing it from the system if needed."""
    if sys.modules.get("bcc") is not None:
        return sys.modules["bcc"]
    try:
        import bcc
        return _recent_enough(bcc)
    except ImportError:
        pass
    pkg = find_bcc_dir(patterns)
    if pkg is None:
        raise BccMissing(f"bcc's Python module not found; {INSTALL_HINT}")
    spec = importlib.util.spec_from_file_location(
        "bcc", pkg / "__init__.py", submodule_search_locations=[str(pkg)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["bcc"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # e.g. libbcc.so.0 missing
        del sys.modules["bcc"]
        raise BccMissing(f"bcc at {pkg} does not load ({exc}); {INSTALL_HINT}") from None
    try:
        return _recent_enough(module)
    except BccMissing:
        del sys.modules["bcc"]
        raise


def _recent_enough(bcc: ModuleType) -> ModuleType:
    """`bcc` itself, unless it is older than any bcc socktrace is tested with.

    >>> _recent_enough(ModuleType("bcc", "")).__name__   # no version: let it try
    'bcc'
    """
    version = getattr(bcc, "__version__", "")
    m = re.match(r"(\d+)\.(\d+)", version)
    if m and (int(m.group(1)), int(m.group(2))) < OLDEST_BCC:
        raise BccMissing(f"bcc {version} is too old: socktrace needs bcc "
                         f"{'.'.join(map(str, OLDEST_BCC))} or later (upgrade python3-bpfcc)")
    return bcc
