"""The application knowledge (apps.toml) and the advice worded from it."""

import re
from pathlib import Path

import pytest

from socktrace.advice import AppsFileError, advise, known_apps, load_apps, recognise
from socktrace.output.advice_text import advice_lines

TOP = Path(__file__).resolve().parents[2]

# what issue 13 asks the knowledge to cover, by entry name
REQUIRED = {"nginx", "apache", "haproxy", "squid", "sshd", "java", "node", "gunicorn", "uvicorn",
            "python", "go", "postgresql", "redis", "samba", "docker-proxy",
            # ... and issue 19, for UDP
            "dnsmasq", "unbound", "chrony", "rsyslog", "snmpd", "openvpn", "node-dgram", "go-udp",
            "python-udp"}


def test_every_application_asked_for_has_an_entry():
    assert REQUIRED <= {a.name for a in known_apps()}
    assert len({a.name for a in known_apps()}) == len(known_apps())


@pytest.mark.parametrize("app", known_apps(), ids=lambda a: a.name)
def test_every_entry_is_tested_or_says_why_not(app):
    """tested_by names a test function that exists in that file; an
    untested entry gives a reason; every entry cites a web page."""
    assert app.source.startswith(("https://", "http://"))
    if app.untested:
        assert not app.tested_by and len(app.untested) > 20
        return
    path, func = app.tested_by.split("::")
    assert re.search(rf"^def {re.escape(func)}\(", (TOP / path).read_text(), re.M), app.tested_by


@pytest.mark.parametrize("app", [a for a in known_apps() if not a.separate], ids=lambda a: a.name)
def test_the_advice_is_worded_for_the_port(app):
    cmdline = {"python-http.server": "python3 -m http.server --bind ::"}.get(app.name, "x")
    a = advise((app.process or ("x",))[0], cmdline, 8123, go=app.go,
               protocol="udp" if app.protocol == "udp" else "tcp")
    assert a["app"] == app.name
    assert "{port}" not in "".join(v for v in a.values() if isinstance(v, str))


def test_recognition_by_name_executable_command_line_or_go():
    assert recognise("squid", "/usr/sbin/squid -sYC").name == "squid"
    assert recognise("apache2", "/usr/sbin/apache2 -k start").name == "apache"
    assert recognise("C2 CompilerThre", "/usr/lib/jvm/java-17-openjdk-amd64/bin/java -jar x.jar").name == "java"
    assert recognise("python3", "/usr/bin/python3 -m http.server --bind ::").name == "python-http.server"
    assert recognise("python3", "/usr/bin/python3 -m uvicorn app:app").name == "uvicorn"
    assert recognise("python3.11", "python3.11 serve.py").name == "python"
    assert recognise("prometheus", "/usr/bin/prometheus", go=True).name == "prometheus"
    assert recognise("node", "node server.js").name == "node"
    assert recognise("javac", "javac X.java") is None
    # a UDP socket gets its protocol's entry, or one about both
    assert recognise("node", "node dgram.js", protocol="udp").name == "node-dgram"
    assert recognise("python3", "python3 udp.py", protocol="udp").name == "python-udp"
    assert recognise("java", "java Udp", protocol="udp").name == "java"
    assert recognise("nginx", "nginx: worker process", protocol="udp") is None


def test_unknown_program_gets_the_generic_advice_in_its_own_name_escaped():
    a = advise("evil\x1b[2J", "./evil", 7000)
    assert a["app"] is None and "0.0.0.0:7000" in a["change"] and "bindv6only" in a["apply"]
    text = "\n".join(advice_lines(a))
    assert "\x1b" not in text and "evil\\x1b[2J" in text


def test_an_application_with_separate_sockets_says_so_and_falls_back():
    a = advise("sshd", "sshd: /usr/sbin/sshd -D", 22)
    assert a["separate"] and "IPV6_V6ONLY" in a["dual_stack"] and "0.0.0.0:22" in a["change"]
    assert "expected separate IPv4 and IPv6 sockets" in "\n".join(advice_lines(a))


@pytest.mark.parametrize("text, error", [
    ('[[app]]\nname = "x"\ncolour = "red"\n', "unknown fields colour"),
    ('[[app]]\nname = "x"\ntitle = "x"\n', "missing"),
    ('[[app]]\nname="x"\ntitle="x"\ndual_stack=""\nwhere=""\ntradeoff=""\nsource=""\n'
     'tested_by="t"\n', "a change and ipv6"),
    ('[[app]]\nname="x"\ntitle="x"\ndual_stack=""\nwhere=""\ntradeoff=""\nsource=""\n'
     'separate=true\n', "tested_by or untested"),
    ('[[app]\n', "apps.toml:"),
    ('[[app]]\nname="x"\ntitle="x"\ndual_stack=""\nwhere=""\ntradeoff=""\nsource=""\n'
     'separate=true\nuntested="no reason needed here"\ncommand=["java("]\n', "command 'java\\(': "),
])
def test_a_bad_entry_is_named(text, error):
    with pytest.raises(AppsFileError, match=error):
        load_apps(text)


def readme_table() -> str:
    """The README's table of the applications, from apps.toml."""
    rows = ["| application | sockets | dual-stack when | the change socktrace advises | IPv6 afterwards "
            "| proven by |",
            "| --- | --- | --- | --- | --- | --- |"]
    for a in known_apps():
        change = "none needed: one socket per family" if a.separate else \
            "`" + a.change.format(port="PORT").replace("\n", "` + `") + "`" + \
            (f" in place of `{a.replaces.format(port='PORT')}`" if a.replaces else "")
        ipv6 = "-" if a.separate else a.ipv6
        proof = f"`{a.tested_by.split('::')[1]}`" if a.tested_by else f"untested: {a.untested}"
        sockets = {"tcp": "TCP", "udp": "UDP", "any": "TCP, UDP"}[a.protocol]
        rows.append(f"| [{a.title}]({a.source}) | {sockets} | {a.dual_stack.format(port='PORT')} | "
                    f"{change} | {ipv6} | {proof} |")
    return "\n".join(rows) + "\n"


def test_readme_lists_the_knowledge_as_apps_toml_has_it():
    assert readme_table() in (TOP / "README.md").read_text(), "README: paste\n" + readme_table()


def test_a_missing_or_broken_shipped_file_is_one_reason(tmp_path, monkeypatch):
    import socktrace.advice as advice
    monkeypatch.setattr(advice.resources, "files", lambda _: tmp_path)
    advice.known_apps.cache_clear()
    try:
        with pytest.raises(AppsFileError, match="cannot read .*apps.toml.*reinstall socktrace"):
            advice.known_apps()
        (tmp_path / "apps.toml").write_text('[[app]]\nname = "x"\n')
        with pytest.raises(AppsFileError, match="entry 1 .x.: .*missing"):
            advice.known_apps()
    finally:
        advice.known_apps.cache_clear()


def test_a_change_of_several_lines_is_printed_as_several_lines():
    text = advice_lines(advise("nginx", "nginx: worker process", 8080), "")
    i = text.index("  with")
    assert text[i + 1:i + 3] == ["    listen 8080;", "    listen [::]:8080;"]


def test_the_fix_for_a_containerised_program_goes_where_the_container_is_defined():
    """The application's own fix stays; the container part says where it
    goes in that runtime's terms (a pod's spec, an nspawn machine)."""
    from socktrace.advice import advise
    pod = {"runtime": "containerd", "id": "ab" * 32, "name": None, "image": None, "pod": "backup-7d9",
           "namespace": "ops", "pod_uid": "5f1e1b2c-0d3e-4f7a-8b9c-0123456789ab"}
    a = advise("java", "java -jar backup.jar", 4243, container=pod)
    assert a["change"] == "-Djava.net.preferIPv4Stack=true"
    assert a["container"]["where"] == ("the pod's spec (its Deployment, StatefulSet or DaemonSet): "
                                       "env: JAVA_TOOL_OPTIONS=-Djava.net.preferIPv4Stack=true")
    assert a["container"]["apply"].endswith("backup-7d9 (namespace ops)")
    machine = {"runtime": "systemd-nspawn", "id": "web", "name": "web", "image": None, "pod": None,
               "namespace": None, "pod_uid": None}
    a = advise("squid", "/usr/sbin/squid -sYC", 3128, container=machine)
    assert a["replaces"] == "http_port 3128"
    assert a["container"]["where"] == "inside the container, as on a host (machinectl shell web)"
    assert advise("squid", "/usr/sbin/squid", 3128)["container"] is None
