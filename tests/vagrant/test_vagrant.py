"""The Vagrant demo as its users run it (tests/vagrant/vagrant_up.py, a
job of the matrix): `vagrant up` with vagrant-libvirt and the project's
Vagrantfile, vagrant/README.md's commands through `vagrant ssh -c`, the
fix for nginx applied as socktrace words it, then `vagrant destroy`,
leaving the host as it was."""

import json
import re

import pytest

VAGRANT = pytest.mark.matrix("vagrant", "demo")


def section(matrix, name: str) -> str:
    r = matrix.result(("vagrant", "demo"))
    assert name in r.sections, f"no {name} section:\n{r.output[-6000:]}"
    rc, out, seconds = r.sections[name]
    print(f"vagrant {name}: {seconds} s")
    assert rc == 0, out[-6000:]
    return out


@VAGRANT
def test_vagrant_up_provisions_the_box_from_the_vagrantfile(matrix):
    box = section(matrix, "box")
    assert re.search(r"vagrant box: (cached|built in \d+ s)", box), box
    up = section(matrix, "up")
    assert "Machine booted and ready!" in up, up[-4000:]
    assert "Running provisioner: shell..." in up, up[-4000:]
    # the project is synced once, to /socktrace: not also to /vagrant
    assert re.search(r"Rsyncing folder: .* => /socktrace", up), up[-4000:]
    assert "=> /vagrant" not in up, up[-4000:]


@VAGRANT
def test_the_demo_through_vagrant_ssh_shows_the_puzzle_and_the_answer(matrix):
    out = section(matrix, "demo")
    # socktrace-demo returns as in a terminal (its held connections go on)
    assert "$ vagrant ssh -c socktrace-demo" in out
    assert re.search(r"accept +\d+/java +127\.0\.0\.1:4243 +127\.0\.0\.1:\d+ +tcp6 MAPPED 0", out)
    assert re.search(r"accept +\d+/nginx +127\.0\.0\.1:8080 .* tcp6 MAPPED 0", out)
    assert re.search(r"accept +\d+/nginx +127\.0\.0\.1:8081 .* tcp +-", out)      # IPv4 listener
    assert re.search(r"accept +\d+/nginx +\[::1\]:8081 .* tcp6 +1", out)         # V6ONLY
    assert re.search(r"accept +\d+/sshd +127\.0\.0\.1:22 .* tcp +-", out)        # IPv4 only
    assert re.search(r"accept +\d+/dualstack-c +127\.0\.0\.1:7070 .* tcp6 MAPPED 0", out)
    assert re.search(r"served \d+ IPv4 connections? on port 4243 through a dual-stack", out)
    assert "-Djava.net.preferIPv4Stack=true" in out
    # netstat's view of the same: the Java server's IPv4 connection as tcp6
    assert re.search(r"tcp6 +0 +0 127\.0\.0\.1:4243 +127\.0\.0\.1:\d+ +ESTABLISHED \d+/java", out)


@VAGRANT
def test_nginx_fixed_as_advised_takes_ipv4_on_plain_tcp(matrix):
    out = section(matrix, "fix")
    assert "    nginx: a 'listen [::]:PORT ipv6only=off;'" in out and "        listen 8080;" in out
    after = out.split("# terminal 1", 1)[1]
    assert re.search(r"accept +\d+/nginx +127\.0\.0\.1:8080 .* tcp +-", after), after
    assert re.search(r"accept +\d+/nginx +\[::1\]:8080 .* tcp6 +1", after), after
    assert "0 IPv4 over AF_INET6 (MAPPED)" in after


@VAGRANT
def test_destroy_leaves_no_vm_network_volume_daemon_or_firewall_change(matrix):
    section(matrix, "destroy")
    host = json.loads(section(matrix, "host").strip().splitlines()[-1])
    before, after = host["before"], host["after"]
    assert after["domains"] == before["domains"]
    assert after["bridges"] == before["bridges"] and not after["dnsmasq_libvirt"]
    assert after["daemons"] == before["daemons"]
    assert after["libvirt_rules"] == before["libvirt_rules"] == []
    # libvirt turned forwarding on for its NAT; docker's daemon, if the
    # container tests started it meanwhile, turned it on too and needs it
    assert after["ip_forward"] == before["ip_forward"] or (host["dockerd"] and after["ip_forward"] == "1")
