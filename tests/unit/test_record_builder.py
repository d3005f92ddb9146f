"""Raw events to records, with bytes alone (record_builder.py)."""

import socket

from socktrace.events import RawEvent, decode
from socktrace.filters import Filter
from socktrace.procinfo import ProcessCache
from socktrace.record_builder import CHUNK, RecordBuilder
from socktrace.records import connection_record
from socktrace.vocabulary import Drops

from rawevents import raw, raw_process
from socks import sock, sockets
from test_procinfo import fake_proc

NETNS = 4026531840   # rawevents.raw's


def make(tmp_path, flt=Filter()):
    return RecordBuilder(ProcessCache(procfs=str(tmp_path), users=lambda uid: "root"), flt)


def records(builder, batch):
    return [r for chunk in builder.connections(batch) for r in chunk]


def test_connections_become_records_with_process_data(tmp_path):
    fake_proc(tmp_path, 31307, "java", [b"java", b"-jar", b"backup.jar"])
    b = make(tmp_path)
    recs = records(b, [raw()]) + records(b, [raw(dport=64703)])
    assert [r["rport"] for r in recs] == [64702, 64703]
    assert recs[0]["cmdline"] == "java -jar backup.jar"
    assert (recs[0]["comm"], recs[0]["process"]) == ("java", "java")
    assert b.processes.lookups == 1  # one lookup per process, not per event


def test_records_copied_from_an_earlier_connection_equal_built_ones(tmp_path):
    """Events of one origin (events.origin) get their record copied from
    the previous one with new time and ports: it must be the record that
    decoding and building it would give, for every kind of event."""
    fake_proc(tmp_path, 31307, "java", [b"java", b"-jar", b"app.jar"])
    fake_proc(tmp_path, 4242, "curl", [b"curl", b"http://10.0.0.12/"])
    events = []
    for i in range(50):
        events.append(raw(dport=50000 + i, ts_ns=10**9 + i * 1000))
        events.append(raw("connect", pid=4242, tid=4242, family=socket.AF_INET, saddr="10.0.0.20",
                          daddr="10.0.0.12", sport=40000 + i, dport=80, v6only=0xff, sk=i))
        events.append(raw(daddr="::ffff:10.0.0.21" if i % 2 else "2001:db8::7", dport=i))
    b = make(tmp_path)
    chunks = list(b.connections(events))
    cache = ProcessCache(procfs=str(tmp_path), users=lambda uid: "root")
    built = [connection_record(c, cache.process(c.pid), "root")
             for c in (decode(e, b.wall_offset_ns) for e in events)]
    assert [r for chunk in chunks for r in chunk] == built
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, 150 - 2 * CHUNK]
    assert len(b._by_origin) == 4   # java x 3 peers, curl x 1
    assert b.summary(Drops())["events"] == 150 and b.summary(Drops())["mapped"] == 75


def test_exec_notice_refreshes_the_command_line(tmp_path):
    fake_proc(tmp_path, 31307, "sh", [b"sh", b"-c", b"exec java"])
    b = make(tmp_path)
    first = records(b, [raw()])
    (tmp_path / "31307" / "cmdline").write_bytes(b"java\0-jar\0app.jar\0")
    later = records(b, [raw("exec", pid=31307), raw()])
    assert [r["cmdline"] for r in first + later] == ["sh -c exec java", "java -jar app.jar"]


def test_userspace_filters(tmp_path):
    b = make(tmp_path, Filter(port=22))
    assert [r["lport"] for r in records(b, [raw(), raw(sport=22)])] == [22]
    assert b.summary(Drops())["by_type"] == {"accept": 1}     # only what passed is counted


def test_name_filter_matches_the_process_or_the_thread(tmp_path):
    fake_proc(tmp_path, 31307, "java", [b"java"])
    b = make(tmp_path, Filter(comm="java"))
    jvm = raw(comm=b"http-nio-8080-A")
    assert len(records(b, [jvm])) == 1
    assert len(records(make(tmp_path, Filter(comm="nio")), [jvm])) == 1
    assert records(make(tmp_path, Filter(comm="nginx")), [jvm]) == []


def unaccepted(**kw):
    return raw("unaccepted", pid=0, tid=0, comm=b"", **kw)



def test_unaccepted_attributed_to_the_listener_by_the_snapshots_rules(tmp_path):
    """Same port, same family, the listener's address a wildcard or the
    connection's own, in the connection's network namespace."""
    fake_proc(tmp_path, 500, "nginx", [b"nginx: master process"])
    fake_proc(tmp_path, 600, "other", [b"other"])
    fake_proc(tmp_path, 501, "nginx", [b"nginx: worker process"])
    listening = sockets(sock("0.0.0.0", 8080, (600,), family="AF_INET"),   # another family
                        sock("::1", 8080, (600,)),                          # another address
                        sock("::", 8080, (600,), state="ESTABLISHED"),      # not a listener
                        sock("::", 8080, (500, 501)))                       # a master and its worker
    b = make(tmp_path)
    recs = b.unaccepted([unaccepted(sport=8080), unaccepted(sport=8080, dport=5001)], listening)
    assert [(r["type"], r["pid"], r["comm"], r["cmdline"], r["tid"]) for r in recs] == \
        [("unaccepted", 500, "nginx", "nginx: master process", None)] * 2
    assert recs[0]["processes"] == [
        {"pid": 500, "comm": "nginx", "cmdline": "nginx: master process", "container": None},
        {"pid": 501, "comm": "nginx", "cmdline": "nginx: worker process", "container": None}]
    foreign = RawEvent.from_buffer_copy(unaccepted(sport=8080))
    foreign.netns = NETNS + 1                                 # a container's connection
    alien = b.unaccepted([bytes(foreign)], listening)[0]
    assert (alien["pid"], alien["processes"]) == (None, [])  # its namespace was not listed
    fake_proc(tmp_path, 700, "java", [b"java"])
    in_container = sockets(sock("::", 8080, (700,), netns=NETNS + 1), *listening.sockets)
    assert b.unaccepted([bytes(foreign)], in_container)[0]["pid"] == 700
    assert b.summary(Drops())["by_type"] == {"unaccepted": 4}


def test_unaccepted_without_listener_owner(tmp_path):
    recs = make(tmp_path).unaccepted([unaccepted()], sockets())
    assert (recs[0]["pid"], recs[0]["comm"], recs[0]["process"]) == (None, None, None)


def test_a_child_some_process_holds_was_accepted(tmp_path):
    """Left in the kernel's maps but held by a process (it has a socket
    inode): taken by an accept the probes missed, an `accept` of that
    process without a thread, not `unaccepted`."""
    fake_proc(tmp_path, 700, "squid", [b"squid", b"-N"])
    b = make(tmp_path)
    held = sockets(sock("10.0.0.12", 3128, (700,), state="ESTABLISHED", raddr="10.0.0.20",
                        rport=50312),
                   sock("10.0.0.12", 3128, (), state="ESTABLISHED", raddr="10.0.0.20",
                        rport=50313, inode=0),              # still queued: no inode
                   sock("::", 3128, (700,)))
    recs = b.unaccepted([unaccepted(sport=3128, dport=50312), unaccepted(sport=3128, dport=50313)],
                        held)
    assert [(r["type"], r["pid"], r["tid"], r["process"], r["rport"]) for r in recs] == \
        [("accept", 700, None, "squid", 50312), ("unaccepted", 700, None, "squid", 50313)]
    assert recs[0]["v6only"] is False and "processes" not in recs[0]
    assert b.summary(Drops())["by_type"] == {"accept": 1, "unaccepted": 1}


def test_the_process_is_named_as_the_kernel_read_it(tmp_path):
    """A python3 whose thread "acceptor" accepts and which exits before
    anything reads /proc: the kernel's introduction of the process (sent
    before its first connection) names it, as netstat would have."""
    b = make(tmp_path)                          # no /proc entry: the process is gone
    [rec] = records(b, [raw_process(5155, b"python3", b"python3\0server.py\0"),
                        raw(pid=5155, tid=5160, comm=b"acceptor")])
    assert (rec["pid"], rec["comm"], rec["process"], rec["cmdline"]) == \
        (5155, "acceptor", "python3", "python3 server.py")
    # the kernel's name wins over /proc's (a process can rename itself later)
    fake_proc(tmp_path, 31307, "renamed", [b"java"])
    [rec] = records(b, [raw_process(31307, b"java", b"java\0"), raw()])
    assert rec["process"] == "java"


def test_container_filter_learns_other_containers_cgroups_for_the_kernel(tmp_path):
    """--container web: a cgroup whose v2 path names another container is
    handed to the kernel to skip, once; never the wanted container's, a
    host process's, or one where only a v1 path names the container (its
    v2 cgroup may be shared with host processes: containerd.service)."""
    from socktrace.containers import Containers, Described

    class Names:
        def describe(self, runtime, id):
            return Described(name={"a": "web", "b": "db"}[id[0]])

    web, db = "a" * 64, "b" * 64
    fake_proc(tmp_path, 10, "java", [b"java"], f"0::/libpod_parent/libpod-{web}\n")
    fake_proc(tmp_path, 11, "postgres", [b"postgres"], f"0::/libpod_parent/libpod-{db}\n")
    fake_proc(tmp_path, 12, "nginx", [b"nginx"], "0::/system.slice/nginx.service\n")
    fake_proc(tmp_path, 13, "redis", [b"redis"],
              f"4:memory:/docker/{db}\n0::/system.slice/containerd.service\n")
    b = RecordBuilder(ProcessCache(str(tmp_path), users=lambda uid: "root",
                                   containers=Containers(Names())),
                      Filter(container=("web",)))
    recs = records(b, [raw(pid=pid, tid=pid, cgroup_id=100 + pid, dport=1000 + n)
                       for n, pid in enumerate((10, 11, 12, 13, 11))])
    assert [r["pid"] for r in recs] == [10]
    assert b.take_unwanted_cgroups() == [111]
    records(b, [raw(pid=11, tid=11, cgroup_id=111, dport=2000)])
    assert b.take_unwanted_cgroups() == []
