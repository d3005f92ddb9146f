"""Entry point.  Ctrl-C and SIGTERM are a normal stop from the first
instant, even while the imports of a cold start run."""

import os
import platform
import signal
import sys

from . import __version__
from .advice import AppsFileError
from .kernel.sources import SourcesMissing
from .signals import Flag, set_on


def run() -> None:
    stop = Flag()
    set_on(stop, signal.SIGINT, signal.SIGTERM)
    try:
        # events.py reads the kernel contract (bpf/socktrace.h) on import
        from .cli import main
        from .session import App
        main(prog_name="socktrace", obj=App(stop=stop))
    except (SourcesMissing, AppsFileError) as exc:
        sys.stderr.write(f"Error: {exc}\n")
        sys.exit(1)
    except Exception as exc:
        # What the CLI did not foresee (a library changed under us, a bug)
        # is still one line for the operator; SOCKTRACE_DEBUG=1 shows where.
        if os.environ.get("SOCKTRACE_DEBUG"):
            raise
        sys.stderr.write(f"Error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())} "
                         f"(socktrace {__version__}, Python {platform.python_version()}; "
                         "SOCKTRACE_DEBUG=1 shows where)\n")
        sys.exit(1)


if __name__ == "__main__":
    run()
