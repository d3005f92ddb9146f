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
