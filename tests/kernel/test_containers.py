"""Containers for real: podman (Debian's) runs a JVM with a dual-stack
ServerSocket in a container of its own (own network namespace, port
published); socktrace, on the host and from its own image, names the
container behind every record, filters by it, and snapshot finds the
listener in the container's namespace and words the fix for it.  Docker's
daemon (Debian's docker.io) runs a Python one, named through its API.

The images come from the matrix's cached bookworm tree (no registry is
reachable here): tests/containers/images.py, a matrix job."""

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dockerd import DOCKER, docker, ensure_dockerd
from helpers import SOCKTRACE, Socktrace, listener, one
from podman import BASE_IMAGE, LIMITS, PODMAN, RUN_LINE, SOCKTRACE_IMAGE, Container, remove, start
from socktrace.containers import Described
from socktrace.runtimes import Runtimes

pytestmark = pytest.mark.matrix("images", "bookworm")

NAME = "st-jvm"     # short: the table shows PID/java@st-jvm whole
PORT = 8080
JAVA_FIX = "podman run -e JAVA_TOOL_OPTIONS=-Djava.net.preferIPv4Stack=true"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jvm(matrix):
    """The JVM in its container (java runs as the container's first
    process), its port published on the host's loopback."""
    images = matrix.result(("images", "bookworm"))
    assert images.rc == 0, images.output[-3000:]
    c = start(NAME, BASE_IMAGE, "java", "/opt/socktrace-demo/DualStackServer.java", str(PORT),
              options=("--label", "io.kubernetes.pod.name=shop-7d9",
                       "--label", "io.kubernetes.pod.namespace=shop"),
              listens=PORT, publish=free_port())
    yield c
    remove(c)


def expected(c):
    return {"runtime": "podman", "id": c.id, "name": NAME, "image": BASE_IMAGE, "pod": None,
            "namespace": None, "pod_uid": None}


def client(how, host, port):
    """A python client that connects to host:port and holds the connection
    5 s, run by the command `how`: (the process, its local port)."""
    code = (f"import socket,time; s=socket.create_connection(({host!r},{port})); "
            "print(s.getsockname()[1], flush=True); time.sleep(5)")
    p = subprocess.Popen([*how, "-c", code], stdout=subprocess.PIPE, text=True)
    return p, int(p.stdout.readline())


def in_netns(c, host, port):
    """On the host's python, in the container's network namespace only: a
    host process there (its records have no container)."""
    return client(["nsenter", "-t", str(c.pid), "-n", sys.executable], host, port)


def in_container(c, host, port):
    """In the container itself (podman exec): its process is the container's."""
    return client([*PODMAN, "exec", c.name, "python3"], host, port)


def in_docker(c, host, port):
    return client([DOCKER, "exec", c.name, "python3"], host, port)


def test_a_containerised_jvms_connections_name_its_container(jvm, socktrace):
    """IPv4 through the published port and from inside, IPv6 inside: each
    accept is in the container's network namespace and names podman's
    container (id, name, image); --container NAME and an id prefix keep
    exactly its processes' records."""
    st = socktrace("-P", str(PORT))
    by_name = socktrace("--container", NAME)
    by_id = socktrace("--container", jvm.id[:12])
    host_ls = listener(v6only=0)           # a host process: in none of the filtered ones
    host_port = host_ls.getsockname()[1]
    outside = socket.create_connection(("127.0.0.1", jvm.published))
    v6, v6_port = in_netns(jvm, "::1", PORT)
    inside, inside_port = in_container(jvm, "127.0.0.1", PORT)
    host_c = socket.create_connection(("127.0.0.1", host_port))
    host_ls.accept()
    try:
        ctr = expected(jvm)
        mapped = one(st, "accept", rport=outside.getsockname()[1])
        native = one(st, "accept", rport=v6_port)
        local = one(st, "accept", rport=inside_port)
        for rec in (mapped, native, local):
            assert (rec["pid"], rec["process"], rec["container"], rec["unit"], rec["netns"]) == \
                (jvm.pid, "java", ctr, None, jvm.netns)
            assert rec["cgroup"] == f"/libpod_parent/libpod-{jvm.id}"
        assert (mapped["sock_family"], mapped["mapped"], mapped["v6only"]) == ("AF_INET6", True, False)
        assert (native["mapped"], native["raddr"]) == (False, "::1")
        assert (local["mapped"], local["raddr"]) == (True, "127.0.0.1")
        # the clients: podman exec's is the container's; nsenter's only borrows its namespace
        assert one(st, "connect", lport=inside_port)["container"] == ctr
        assert one(st, "connect", lport=v6_port)["container"] is None
        for filtered in (by_name, by_id):
            one(filtered, "accept", rport=inside_port)
            one(filtered, "connect", lport=inside_port)
        time.sleep(0.5)
        for filtered in (by_name, by_id):
            recs = [r for r in filtered.records if r["type"] in ("accept", "connect")]
            assert {r["container"]["id"] for r in recs} == {jvm.id}
            assert not [r for r in recs if host_port in (r["lport"], r["rport"])]
        assert st.stop() == 0
        dual = [d for d in st.records[-1]["dual_stack"] if d["port"] == PORT]
        assert [(d["container"], d["mapped"]) for d in dual] == [(ctr, 2)]
        advice = dual[0]["advice"]
        assert advice["app"] == "java" and advice["change"] == "-Djava.net.preferIPv4Stack=true"
        assert JAVA_FIX in advice["container"]["where"]
        assert advice["container"]["apply"].startswith(f"re-create the container from its definition: "
                                                       f"podman rm -f {NAME}")
    finally:
        for p in (v6, inside):
            p.kill()
            p.wait()


def test_the_table_names_the_container(jvm):
    proc = subprocess.Popen([SOCKTRACE, "-P", str(PORT), "--no-snapshot", "--duration", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().split()[2] == "PID/COMM@CONTAINER"
        c = socket.create_connection(("127.0.0.1", jvm.published))
        row = proc.stdout.readline()
        assert re.search(rf" accept  {jvm.pid}/java@{NAME} +10\.88\.\S+:{PORT} .* tcp6 MAPPED 0$", row), row
        assert len(row.rstrip("\n")) <= 100
        c.close()
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
        assert f"socktrace: {jvm.pid}/java@{NAME} served 1 IPv4 connection on port {PORT}" in err
        assert f"  in podman container {NAME}, image {BASE_IMAGE}: make the change in the container's " \
               f"environment: {JAVA_FIX}" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def snapshot(*args):
    r = subprocess.run([SOCKTRACE, "snapshot", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_snapshot_finds_the_listener_in_the_containers_namespace(jvm):
    """As root, snapshot looks into every network namespace: the JVM's
    dual-stack listener is there, named by its container, and the fix is
    worded for it."""
    recs = [json.loads(line) for line in snapshot("--json", "-P", str(PORT)).splitlines()]
    ls = [r for r in recs if r["state"] == "LISTEN" and r["netns"] == jvm.netns]
    assert len(ls) == 1
    rec = ls[0]
    assert (rec["pid"], rec["comm"], rec["v6only"], rec["container"]) == (jvm.pid, "java", False, expected(jvm))
    assert rec["processes"][0]["container"] == expected(jvm)
    assert JAVA_FIX in rec["advice"]["container"]["where"]
    assert not [r for r in map(json.loads, snapshot("--json", "--own-netns", "-P", str(PORT)).splitlines())
                if r["netns"] == jvm.netns]
    assert f"{jvm.pid}/java@{NAME}" in snapshot("-P", str(PORT))
    text = snapshot("--explain", "--container", NAME)
    assert f"{jvm.pid}/java listens on [::]:{PORT} with a dual-stack AF_INET6 socket" in text
    assert f"  in podman container {NAME} (image {BASE_IMAGE}, id {jvm.id[:12]}), network namespace {jvm.netns}" \
        in text
    assert f"in podman container {NAME}, image {BASE_IMAGE}: make the change in the container's " \
           f"environment: {JAVA_FIX} (compose: environment:)" in text
    assert "    fix, in the JVM's options" in text      # the application's own fix stays


def test_socktrace_from_its_image_gives_the_same_records(jvm, socktrace):
    """The Containerfile's image, run with README's run line, reports what
    socktrace on the host reports for the same connections (but for the
    wall clock each reads on its own)."""
    host = socktrace("-P", str(PORT))
    image = socktrace("-P", str(PORT), command=(*PODMAN, "run", "--rm", "-i", *LIMITS, *RUN_LINE, SOCKTRACE_IMAGE),
                      ready_timeout=120)
    outside = socket.create_connection(("127.0.0.1", jvm.published))
    inside, inside_port = in_container(jvm, "127.0.0.1", PORT)
    try:
        for match in ({"rport": outside.getsockname()[1]}, {"rport": inside_port}):
            a, b = one(host, "accept", **match), one(image, "accept", **match)
            assert a["container"] == expected(jvm)
            assert {k: v for k, v in a.items() if k != "time"} == {k: v for k, v in b.items() if k != "time"}
        a, b = one(host, "connect", lport=inside_port), one(image, "connect", lport=inside_port)
        assert {k: v for k, v in a.items() if k != "time"} == {k: v for k, v in b.items() if k != "time"}
        assert image.stop() == 0
    finally:
        inside.kill()
        inside.wait()


def test_podmans_http_api_names_the_container_and_its_pod(jvm, tmp_path):
    """docker's API, as podman serves it (`podman system service`): the
    name, the image, and a Kubernetes pod from the labels a kubelet sets."""
    sock = tmp_path / "run/podman/podman.sock"
    sock.parent.mkdir(parents=True)
    service = subprocess.Popen([*PODMAN, "system", "service", "--time=0", f"unix://{sock}"],
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert time.monotonic() < deadline and service.poll() is None, "podman's service did not start"
            time.sleep(0.1)
        # tmp_path has no podman storage file: the API is asked
        assert Runtimes(str(tmp_path)).describe("podman", jvm.id) == \
            Described(name=NAME, image=BASE_IMAGE, pod="shop-7d9", namespace="shop")
        assert Runtimes(str(tmp_path)).describe("podman", "f" * 64) == Described()
    finally:
        service.terminate()
        service.wait(30)


SERVER = ("import socket\n"
          "s = socket.socket(socket.AF_INET6)\n"
          "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
          "s.bind(('::', 8081)); s.listen(64)\n"
          "while True: s.accept()[0].close()\n")


@pytest.fixture(scope="module")
def dock(matrix):
    """A Python server in docker's container (the daemon started if need be)."""
    images = matrix.result(("images", "bookworm"))
    assert images.rc == 0, images.output[-3000:]
    ensure_dockerd()
    name = "st-dock"
    docker("rm", "-f", name, check=False)
    cid = docker("run", "-d", "--name", name, *LIMITS, BASE_IMAGE, "python3", "-c", SERVER)
    c = Container(name, cid, int(docker("inspect", "-f", "{{.State.Pid}}", cid)))
    try:
        c.wait_listening(8081, lambda: docker("logs", cid))
        yield c
    finally:
        docker("rm", "-f", name, check=False)


def test_a_docker_container_is_named_by_dockers_api(dock):
    """Docker's daemon (docker.io, cgroupfs driver: /docker/<id>), asked on
    its socket: the records and snapshot name the container and its image."""
    want = {"runtime": "docker", "id": dock.id, "name": dock.name, "image": BASE_IMAGE, "pod": None,
            "namespace": None, "pod_uid": None}
    st = Socktrace("--container", dock.name)
    try:
        client, port = in_netns(dock, "127.0.0.1", 8081)
        rec = one(st, "accept", rport=port)
        assert (rec["pid"], rec["process"], rec["mapped"], rec["netns"], rec["container"]) == \
            (dock.pid, "python3", True, dock.netns, want)
        assert rec["cgroup"] == f"/docker/{dock.id}"
        client.kill()
        client.wait()
    finally:
        st.stop()
    ls = [json.loads(line) for line in snapshot("--json", "--container", dock.id[:12]).splitlines()]
    assert [(r["state"], r["lport"], r["container"]) for r in ls] == [("LISTEN", 8081, want)]


def cgroup2_dir(path: str) -> Path:
    """The cgroup v2 directory of a cgroup path (unified or hybrid mount)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2":
            return Path(fields[4]) / path.lstrip("/")
    raise AssertionError("no cgroup2 mount")


def skipped_cgroups() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "map", "dump", "name", "skip_cgroups"], capture_output=True,
                         text=True, check=True).stdout
    return {int.from_bytes(bytes(int(b, 16) for b in e["key"]), "little") for e in json.loads(out)}


def test_container_filter_has_the_kernel_skip_other_containers(jvm, dock, socktrace):
    """--container st-jvm: the first event of docker's container, in its
    own cgroup, teaches the kernel to skip that cgroup; the JVM's records
    still come."""
    st = socktrace("--container", NAME)
    other, other_port = in_docker(dock, "127.0.0.1", 8081)
    mine, my_port = in_container(jvm, "127.0.0.1", PORT)
    try:
        one(st, "accept", rport=my_port)
        dock_cgroup = cgroup2_dir(f"/docker/{dock.id}").stat().st_ino
        deadline = time.monotonic() + 10
        while dock_cgroup not in skipped_cgroups():
            assert time.monotonic() < deadline, (dock_cgroup, skipped_cgroups())
            time.sleep(0.2)
        assert cgroup2_dir(f"/libpod_parent/libpod-{jvm.id}").stat().st_ino not in skipped_cgroups()
        assert not [r for r in st.records if r.get("container") and r["container"]["id"] != jvm.id]
    finally:
        for p in (other, mine):
            p.kill()
            p.wait()



def test_existing_connections_in_a_container_are_listed_at_start(jvm, socktrace):
    """The tracer's first lines look into every network namespace: an IPv4
    connection the JVM accepted in its container before tracing began."""
    c = socket.create_connection(("127.0.0.1", jvm.published))
    deadline = time.monotonic() + 10
    while not [s for s in snapshot("--json", "--container", NAME, "-P", str(PORT)).splitlines()
               if '"ESTABLISHED"' in s]:
        assert time.monotonic() < deadline, "the JVM did not accept"
        time.sleep(0.2)
    st = socktrace("--container", NAME)
    existing = [r for r in st.records if r["type"] == "existing" and r["rport"] == c.getsockname()[1]]
    assert [(r["netns"], r["pid"], r["mapped"], r["lport"], r["container"]) for r in existing] == \
        [(jvm.netns, jvm.pid, True, PORT, expected(jvm))]
    assert not [r for r in st.records if r["type"] == "existing" and r["container"] is None]
    c.close()


def test_a_connection_nobody_accepts_in_a_container_names_its_listener(jvm, socktrace):
    """`unaccepted`: found in the container's network namespace, owned by
    the container's process that listens and never accepts."""
    code = ("import socket,time; s=socket.socket(socket.AF_INET6); s.bind(('::',9090)); s.listen(8); "
            "print('up', flush=True); time.sleep(60)")
    idle = subprocess.Popen([*PODMAN, "exec", jvm.name, "python3", "-c", code], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert idle.stdout.readline() == "up\n"
        st = socktrace("--container", NAME, "--unaccepted-after", "0.5")
        client, port = in_netns(jvm, "127.0.0.1", 9090)
        rec = one(st, "unaccepted", rport=port)
        holder = [p for p in rec["processes"] if p["comm"] == "python3"]
        assert (rec["netns"], rec["process"], rec["mapped"], rec["container"]) == \
            (jvm.netns, "python3", True, expected(jvm))
        assert holder and holder[0]["pid"] == rec["pid"] and holder[0]["container"] == expected(jvm)
        client.kill()
        client.wait()
    finally:
        idle.kill()
        idle.wait()
