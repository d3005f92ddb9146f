import pytest

from socktrace.events import decode
from socktrace.filters import Filter

from rawevents import raw

MAPPED = decode(raw(), 0)                                                   # java, 4243
NATIVE6 = decode(raw(saddr="::1", daddr="::1", sport=22, dport=5000, comm=b"sshd"), 0)
PLAIN4 = decode(raw(family=2, saddr="127.0.0.1", daddr="127.0.0.1", sport=80, dport=6000,
                    comm=b"nginx", pid=7), 0)
ALL = [MAPPED, NATIVE6, PLAIN4]


@pytest.mark.parametrize("flt, expected", [
    (Filter(), ALL),
    (Filter(mapped_only=True), [MAPPED]),
    (Filter(peer="4"), [MAPPED, PLAIN4]),
    (Filter(peer="6"), [NATIVE6]),
    (Filter(pid=7), [PLAIN4]),
    (Filter(port=5000), [NATIVE6]),          # remote port
    (Filter(port=4243), [MAPPED]),           # local port
    (Filter(port=(4243, 80)), [MAPPED, PLAIN4]),   # any of several (-P 4243,80)
    (Filter(pid=(7, 99)), [PLAIN4]),
    (Filter(comm="ngin"), [PLAIN4]),
    (Filter(comm="java", mapped_only=True), [MAPPED]),
    (Filter(comm="java", peer="6"), []),
])
def test_filter(flt, expected):
    assert [c for c in ALL if flt.matches(c)] == expected


def test_container_filter_by_name_or_id_prefix():
    web = {"runtime": "docker", "id": "0123456789ab" + "c" * 52, "name": "web"}
    for wanted, hit in ((("web",), True), (("0123456789ab",), True), (("0123",), False),
                        (("db", "web"), True), (("db",), False)):
        flt = Filter(container=wanted)
        assert flt.matches(MAPPED, "java", web) is hit, wanted
        assert not flt.matches(MAPPED, "java", None)   # a host process is in no container
