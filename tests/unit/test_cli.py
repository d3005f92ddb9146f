from click.testing import CliRunner

from socktrace.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_help_lists_the_filters():
    r = run("--help")
    assert r.exit_code == 0
    for opt in ("--json", "--mapped-only", "--pid", "--port", "--comm", "-4", "-6", "--probe"):
        assert opt in r.output


def test_4_and_6_exclude_each_other():
    r = run("-4", "-6")
    assert r.exit_code == 2 and "-4 and -6 exclude each other" in r.output


def test_bad_port():
    r = run("-P", "70000")
    assert r.exit_code == 2 and "70000 is not a TCP port" in r.output


def test_bad_probe():
    r = run("--probe", "uprobe")
    assert r.exit_code == 2 and "uprobe" in r.output


def test_not_root_is_one_line(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    r = run("--json")
    assert r.exit_code == 1
    assert r.output == "Error: socktrace needs root to load BPF programs: run it with sudo\n"


def test_buffer_pages_power_of_two():
    r = run("--buffer-pages", "3")
    assert r.exit_code == 2 and "3 is not a power of 2" in r.output


def test_an_unforeseen_error_is_one_line(monkeypatch, capsys):
    """A library changing under socktrace (bcc 0.18 lacked a method 0.26
    has) is an error line naming the versions, not a traceback."""
    import signal

    import pytest
    import socktrace.cli
    from socktrace.__main__ import run as entry_point

    def broken(**_):
        raise AttributeError("'BPF' object has no attribute 'perf_buffer_consume'")
    monkeypatch.setattr(socktrace.cli, "main", broken)
    monkeypatch.delenv("SOCKTRACE_DEBUG", raising=False)
    monkeypatch.setattr(signal, "signal", lambda *_: None)   # run() would take SIGINT over
    with pytest.raises(SystemExit) as exit_:
        entry_point()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1
    assert err.startswith("Error: unexpected AttributeError: 'BPF' object has no attribute "
                          "'perf_buffer_consume' (socktrace ")
    monkeypatch.setenv("SOCKTRACE_DEBUG", "1")
    with pytest.raises(AttributeError):
        entry_point()


def test_ports_and_pids_take_several_values():
    """As bcc's tools: -P 80,443, repeated, or both."""
    from socktrace.cli import _numbers
    ports = _numbers(1, 65535, "a TCP port (1-65535)")
    assert ports(None, None, ("80,443", "8080")) == (80, 443, 8080)
    assert ports(None, None, ()) == ()
    r = run("-P", "80,http")
    assert r.exit_code == 2 and "'http' is not a TCP port (1-65535)" in r.output
    r = run("snapshot", "-p", "0")
    assert r.exit_code == 2 and "0 is not a process id" in r.output


def test_tracer_options_before_a_subcommand_are_an_error():
    """`socktrace -p 5 snapshot` would list every socket: say where -p goes."""
    r = run("-p", "5", "snapshot")
    assert r.exit_code == 2
    assert "put -p/--pid after 'snapshot'" in r.output
    r = run("--probe", "kprobe", "report", "x.log")
    assert r.exit_code == 2 and "put --probe not at all ('report' does not trace)" in r.output


def test_bpf_sources_missing_is_one_line(tmp_path):
    """An installation without bpf/ (the kernel contract events.py reads
    on import) says so in one line, not a traceback."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    import socktrace
    shutil.copytree(Path(socktrace.__file__).parent, tmp_path / "src" / "socktrace",
                    ignore=shutil.ignore_patterns("bpf", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "socktrace", "--help"], capture_output=True, text=True,
                       env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "BPF sources" in r.stderr and "reinstall" in r.stderr


def test_metrics_address():
    for bad, why in (("foo:9100", "'foo' is not an IP address"), ("9100x", "the port must be a number"),
                     ("::1:9100", "in brackets: [::1]:9100"), ("0", "from 1 to 65535")):
        r = run("--metrics", bad)
        assert r.exit_code == 2 and why in r.output, (bad, r.output)


def test_quiet_with_metrics_alone_is_fine(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)   # stops right after the options
    r = run("-q", "--metrics", "9100")
    assert r.exit_code == 1 and "needs root" in r.output


def test_container_takes_a_name_or_an_id():
    assert "--container" in run("--help").output
    r = run("--container", "", "--json")
    assert r.exit_code == 2 and "'' is not a container name or id" in r.output
    r = run("snapshot", "--container", "a b")
    assert r.exit_code == 2 and "'a b' is not a container name or id" in r.output
