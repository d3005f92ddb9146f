from socktrace.procinfo import NO_PROCESS, ProcessCache, ProcessInfo, socket_owners


def fake_proc(root, pid, comm, argv, cgroup="0::/user.slice\n"):
    d = root / str(pid)
    d.mkdir()
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    (d / "cgroup").write_text(cgroup)


def test_reads_and_caches_per_pid(tmp_path):
    fake_proc(tmp_path, 10, "java", [b"java", b"-jar", b"app.jar"])
    cache = ProcessCache(procfs=str(tmp_path), users=lambda uid: "root")
    assert cache.process(10) == ProcessInfo("java", "java -jar app.jar", "/user.slice")
    (tmp_path / "10" / "cmdline").write_bytes(b"changed\0")
    assert cache.process(10).cmdline == "java -jar app.jar"   # cached
    assert cache.lookups == 1


def test_forget_refreshes_after_exec(tmp_path):
    fake_proc(tmp_path, 10, "sh", [b"/bin/sh"])
    cache = ProcessCache(procfs=str(tmp_path))
    cache.process(10)
    (tmp_path / "10" / "cmdline").write_bytes(b"/usr/bin/java\0")
    cache.forget(10)
    assert cache.process(10).cmdline == "/usr/bin/java"
    assert cache.lookups == 2


def test_gone_process(tmp_path):
    assert ProcessCache(procfs=str(tmp_path)).process(99) == NO_PROCESS


def test_cgroup_v1_only(tmp_path):
    fake_proc(tmp_path, 5, "x", [b"x"], cgroup="12:pids:/docker/abc\n3:cpu:/docker/abc\n")
    assert ProcessCache(procfs=str(tmp_path)).process(5).cgroup == "/docker/abc"


def test_user_names_cached():
    calls = []
    cache = ProcessCache(users=lambda uid: calls.append(uid) or "u%d" % uid)
    assert cache.user(1000) == cache.user(1000) == "u1000"
    assert calls == [1000]


def fake_fd(root, pid, fd, target):
    d = root / str(pid) / "fd"
    d.mkdir(parents=True, exist_ok=True)
    (d / str(fd)).symlink_to(target)


def test_socket_owners(tmp_path):
    fake_fd(tmp_path, 7, 3, "socket:[100]")
    fake_fd(tmp_path, 8, 4, "socket:[100]")       # shared after fork
    fake_fd(tmp_path, 8, 5, "/dev/null")
    fake_fd(tmp_path, 9, 3, "socket:[200]")
    owners, hidden = socket_owners(str(tmp_path))
    assert ({k: sorted(v) for k, v in owners.items()}, hidden) == ({100: [7, 8], 200: [9]}, 0)


def test_kernel_command_line_wins_over_proc(tmp_path):
    """The kernel read argv at the connection; /proc may already show the
    program the process exec'd since."""
    fake_proc(tmp_path, 10, "java", [b"java", b"-jar", b"new.jar"])
    cache = ProcessCache(procfs=str(tmp_path))
    cache.introduce(10, b"sh\0-c\0run\0", truncated=False)
    assert cache.process(10) == ProcessInfo("java", "sh -c run", "/user.slice")
    assert cache.lookups == 1


def test_truncated_kernel_command_line_completed_from_proc(tmp_path):
    fake_proc(tmp_path, 10, "java", [b"java", b"-cp", b"a.jar:b.jar", b"Main"])
    cache = ProcessCache(procfs=str(tmp_path))
    cache.introduce(10, b"java\0-cp\0a.j", truncated=True)
    assert cache.process(10).cmdline == "java -cp a.jar:b.jar Main"
    cache.introduce(10, b"python3\0-m", truncated=True)      # /proc shows another program
    assert cache.process(10).cmdline == "python3 -m"


def test_kernel_could_not_read_command_line(tmp_path):
    fake_proc(tmp_path, 10, "nginx", [b"nginx: worker process"])
    cache = ProcessCache(procfs=str(tmp_path))
    cache.introduce(10, b"", truncated=False)
    assert cache.process(10).cmdline == "nginx: worker process"
