"""Where the BPF C sources are: inside the installed package (the wheel
carries bpf/ as socktrace/bpf), or the checkout's top-level bpf/."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


class SourcesMissing(Exception):
    pass


def bpf_source_dir() -> Path:
    """The BPF C sources: inside the installed package, or the checkout's bpf/."""
    packaged = resources.files("socktrace") / "bpf"
    if packaged.joinpath("socktrace.bpf.c").is_file():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[3] / "bpf"
    if (checkout / "socktrace.bpf.c").is_file():
        return checkout
    raise SourcesMissing(f"the BPF sources (socktrace.bpf.c, socktrace.h) are missing from {packaged} "
                         f"and {checkout}: reinstall socktrace (make install)")
