"""Entry point.  Ctrl-C and SIGTERM are a normal stop from the first
instant, even while the imports of a cold start run."""

import signal
import threading


def run() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from .cli import main
    main(prog_name="socktrace", obj={"stop": stop})


if __name__ == "__main__":
    run()
