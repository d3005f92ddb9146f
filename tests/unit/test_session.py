"""The session owns its outputs: each is closed exactly once, on every
way a run can end (session.trace), with the kernel replaced by a fake."""

import contextlib
import json
import os
import signal
import socket

import pytest

from socktrace import session
from socktrace.output.jsonl import JsonSink
from socktrace.output.logfile import LogWriter
from socktrace.session import App, SessionError, TraceOptions, open_outputs, trace
from socktrace.signals import set_on

from rawevents import raw
from test_tracer import FakeProbes


class FakeKernel:
    """session.Kernel over test_tracer's FakeProbes; `fail` makes loading
    fail as a kernel without any working probe mode would."""

    def __init__(self, batches=(), fail=False, on_poll=None):
        self.batches, self.fail, self.on_poll = batches, fail, on_poll
        self.probes_made = []

    def check(self):
        pass

    @contextlib.contextmanager
    def probes(self, opts):
        if self.fail:
            raise SessionError("no probe mode works here: tracepoint: refused")
        p = FakeProbes(self.batches, self.stop)
        if self.on_poll:
            poll = p.poll
            p.poll = lambda ms: (self.on_poll(), poll(ms))[1]
        self.probes_made.append(p)
        try:
            yield p
        finally:
            p.close()


@pytest.fixture
def closes(monkeypatch):
    """How often each output's close() ran, by output class."""
    calls = []
    for cls in (JsonSink, LogWriter):
        original = cls.close
        monkeypatch.setattr(cls, "close",
                            lambda self, _o=original, _c=cls: calls.append(_c.__name__) or _o(self))
    return calls


def start(tmp_path, kernel, **opts):
    app = App(trace=TraceOptions(json=True, output=str(tmp_path / "log"), snapshot=False, **opts))
    kernel.stop = app.stop
    return app


def logged(tmp_path):
    return [json.loads(line)["type"] for line in (tmp_path / "log").read_text().splitlines()]


def test_a_normal_run_closes_each_output_once(tmp_path, closes, capsys):
    kernel = FakeKernel([[raw(dport=10)]])
    trace(start(tmp_path, kernel), kernel)
    # stdout's JsonSink, the log's JsonSink and the LogWriter it owns
    assert sorted(closes) == ["JsonSink", "JsonSink", "LogWriter"]
    assert kernel.probes_made[0].calls[-1] == "close"
    assert logged(tmp_path) == ["ready", "accept", "accept", "summary"]
    assert [json.loads(l)["type"] for l in capsys.readouterr().out.splitlines()] == logged(tmp_path)


def test_sigterm_closes_each_output_once(tmp_path, closes, capsys):
    kernel = FakeKernel([[raw(dport=10)]] * 1000, on_poll=lambda: os.kill(os.getpid(), signal.SIGTERM))
    app = start(tmp_path, kernel)
    old = signal.getsignal(signal.SIGTERM)
    set_on(app.stop, signal.SIGTERM)
    try:
        trace(app, kernel)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert app.stop.is_set()
    assert sorted(closes) == ["JsonSink", "JsonSink", "LogWriter"]
    assert logged(tmp_path)[-1] == "summary"


def test_an_error_while_starting_closes_each_output_once(tmp_path, closes):
    kernel = FakeKernel(fail=True)
    with pytest.raises(SessionError, match="no probe mode works"):
        trace(start(tmp_path, kernel), kernel)
    assert sorted(closes) == ["JsonSink", "JsonSink", "LogWriter"]
    assert (tmp_path / "log").read_text() == ""


def test_an_error_while_tracing_closes_each_output_once(tmp_path, closes, monkeypatch):
    def broken(self, recs):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(JsonSink, "connections", broken)
    kernel = FakeKernel([[raw(dport=10)]])
    with pytest.raises(OSError):
        trace(start(tmp_path, kernel), kernel)
    assert sorted(closes) == ["JsonSink", "JsonSink", "LogWriter"]
    assert kernel.probes_made[0].calls[-1] == "close"


def test_outputs_opened_before_a_failing_one_are_closed(tmp_path, closes):
    """The metrics' port is taken: the log, opened first, is closed again."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        opts = TraceOptions(quiet=True, output=str(tmp_path / "log"),
                            metrics=("127.0.0.1", busy.getsockname()[1]))
        with pytest.raises(SessionError, match="--metrics 127.0.0.1:.*in use"):
            open_outputs(opts)
    assert sorted(closes) == ["JsonSink", "LogWriter"]


def test_the_metrics_sink_owns_its_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = open_outputs(TraceOptions(quiet=True, metrics=("127.0.0.1", port)))
    with socket.create_connection(("127.0.0.1", port)):
        pass
    sink.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port))
