"""The log file writer: whole lines, rotation, durability, disk full, safety."""

import errno
import gzip
import io
import json
import os

import pytest

from socktrace.output.logfile import LogFileError, LogWriter, open_log


def lines_of(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f]


def rec(i):
    return json.dumps({"type": "accept", "n": i, "pad": "x" * 80}) + "\n"


def test_appends_whole_lines_and_creates_0600(tmp_path):
    path = tmp_path / "log"
    path.write_text('{"type":"summary"}\n')
    w = LogWriter(str(path))
    for i in range(3):
        w.write(rec(i))
    assert [r.get("n") for r in lines_of(path)] == [None]   # buffered until flush
    w.flush()
    w.close()
    assert [r.get("n") for r in lines_of(path)] == [None, 0, 1, 2]
    new = tmp_path / "new"
    LogWriter(str(new)).close()
    assert oct(new.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("gz", [False, True])
def test_rotation_loses_and_repeats_nothing(tmp_path, gz):
    path = tmp_path / "log"
    w = LogWriter(str(path), rotate_size=4096, rotate_keep=100, gzip_rotated=gz)
    for i in range(1000):
        w.write(rec(i))
        if i % 7 == 0:
            w.flush()
    w.close()
    files = sorted(tmp_path.iterdir(), key=lambda p: -int(p.name.split(".")[1]) if "." in p.name else 0)
    assert all(f.name.endswith(".gz") == gz for f in files if f.name != "log")
    numbers = [r["n"] for f in files for r in lines_of(f)]
    assert numbers == list(range(1000))
    assert all(f.stat().st_size <= 4096 + 8 * 120 for f in files if not gz)


def test_rotation_keeps_n(tmp_path):
    w = LogWriter(str(tmp_path / "log"), rotate_size=4096, rotate_keep=2)
    for i in range(500):
        w.write(rec(i))
        w.flush()
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "log.1", "log.2"]


def test_reopen_after_logrotate_moved_the_file(tmp_path):
    path = tmp_path / "log"
    w = LogWriter(str(path))
    w.write(rec(0))
    w.flush()
    os.rename(path, tmp_path / "log.1")       # logrotate, create mode
    w.write(rec(1))                            # still goes to the moved file
    w.reopen()
    w.write(rec(2))
    w.close()
    assert [r["n"] for r in lines_of(tmp_path / "log.1")] == [0, 1]
    assert [r["n"] for r in lines_of(path)] == [2]


def test_fsync_at_most_once_a_second_unless_always(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    now = [0.0]
    w = LogWriter(str(tmp_path / "log"), clock=lambda: now[0])
    for i in range(5):
        w.write(rec(i))
        w.flush()
        now[0] += 0.3
    assert len(synced) == 1          # at t=1.2 s
    w.write(rec(5))
    w.flush()                        # t=1.5: not due
    assert len(synced) == 1
    w.close()
    assert len(synced) == 2          # at close: nothing left unsynced
    synced.clear()
    w = LogWriter(str(tmp_path / "log2"), fsync="always", clock=lambda: 0.0)
    for i in range(3):
        w.write(rec(i))
        w.flush()
    assert len(synced) == 3
    w.close()


class FullDisk:
    """os.write that accepts `room` more bytes, then fails with ENOSPC."""

    def __init__(self, room):
        self.room = room
        self.real = os.write

    def __call__(self, fd, data):
        if self.room is None:
            return self.real(fd, data)
        if self.room == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.real(fd, data[:self.room])
        self.room -= n
        return n


def test_disk_full_counts_and_reports_when_space_returns(tmp_path, monkeypatch):
    path = tmp_path / "log"
    full = FullDisk(room=None)
    monkeypatch.setattr(os, "write", full)
    err = io.StringIO()
    w = LogWriter(str(path), err=err)
    w.write(rec(0))
    w.flush()
    full.room = 150                       # one whole line fits, the next only in part
    for i in range(1, 6):
        w.write(rec(i))
    w.flush()
    w.write(rec(6))
    w.flush()                             # nothing fits
    full.room = None                      # space returns
    w.write(rec(7))
    w.flush()
    w.close()
    got = lines_of(path)                  # every line whole: the partial one was cut
    assert [r.get("n") for r in got] == [0, 1, None, 7]
    assert got[2] == {"type": "unwritten", "records": 5, "reason": "disk full"}
    assert w.unwritten_total == 5
    assert err.getvalue().count("disk full") == 1


def test_refuses_a_symlink_and_leaves_the_target_alone(tmp_path):
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    (tmp_path / "log").symlink_to(target)
    with pytest.raises(LogFileError, match="is a symbolic link: refusing to follow it"):
        open_log(str(tmp_path / "log"))
    assert target.read_text() == "root:x:0:0\n"


def test_refuses_a_file_of_another_user(tmp_path, monkeypatch):
    path = tmp_path / "log"
    path.write_text("theirs\n")
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(path).st_uid + 1)
    with pytest.raises(LogFileError, match="is owned by uid"):
        open_log(str(path))
    assert path.read_text() == "theirs\n"


def test_refuses_hard_links_and_directories(tmp_path):
    (tmp_path / "a").write_text("")
    os.link(tmp_path / "a", tmp_path / "b")
    with pytest.raises(LogFileError, match="hard links"):
        open_log(str(tmp_path / "b"))
    with pytest.raises(LogFileError, match="cannot open"):
        open_log(str(tmp_path))
    with pytest.raises(LogFileError, match="No such file or directory"):
        open_log(str(tmp_path / "missing" / "log"))
