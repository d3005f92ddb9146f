"""The log file: JSON Lines appended to a file that survives the incident.

- Whole lines only: records are written in batches of complete lines with
  one write(2) each; after kill -9 at most the last line is partial, and a
  short write (disk full) is cut back to the last complete line.
- Prompt: the tracer flushes after every poll of the event buffer, so a
  record reaches the OS within POLL_MS (100 ms) of arriving, or sooner when
  the batch passes BATCH_BYTES.  fsync(2) runs at least once a second and at
  close; with fsync="always" after every batch.
- Rotation like auditd's max_log_file/num_logs: PATH -> PATH.1 -> ... ->
  PATH.KEEP, optionally gzip'ed (PATH.1.gz) in a background thread.  The
  writer rotates between batches, so no record is split, lost or repeated.
- reopen() (on SIGHUP) opens PATH afresh, for logrotate's `create` mode.
- Disk full (ENOSPC/EDQUOT): tracing goes on; the records that cannot be
  written are counted, a warning goes once to stderr, and an `unwritten`
  record with the count is the first line written when space returns.
- Safe as root: created 0600; a symlink at PATH, a file owned by another
  user, a hard-linked file or a non-regular file is refused (the /tmp
  symlink attack).
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import stat
import sys
import threading
import time
from typing import Callable, TextIO

from ..vocabulary import RecordType
from .jsonl import dumps

BATCH_BYTES = 64 * 1024
FSYNC_INTERVAL_S = 1.0
_FULL = (errno.ENOSPC, errno.EDQUOT)


class LogFileError(Exception):
    """The log file cannot be opened safely; the message is one line."""


def open_log(path: str) -> int:
    """Open `path` for appending, creating it 0600, refusing what an
    attacker could have planted there."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LogFileError(f"{path} is a symbolic link: refusing to follow it") from None
        raise LogFileError(f"cannot open {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not by uid {os.geteuid()}: refusing to write to it"
    elif st.st_nlink > 1:
        problem = f"has {st.st_nlink} hard links: refusing to write to it"
    if problem:
        os.close(fd)
        raise LogFileError(f"{path} {problem}")
    return fd


class LogWriter:
    """A text stream (write/flush) of whole JSON lines into a rotated file."""

    def __init__(self, path: str, rotate_size: int | None = None, rotate_keep: int = 5,
                 gzip_rotated: bool = False, fsync: str = "interval",
                 err: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.rotate_size = rotate_size
        self.rotate_keep = rotate_keep
        self.gzip_rotated = gzip_rotated
        self.fsync_always = fsync == "always"
        self.err = err
        self.clock = clock
        self.fd = open_log(path)
        self.size = os.fstat(self.fd).st_size
        self._lines: list[bytes] = []
        self._pending_bytes = 0
        self._last_fsync = clock()
        self._dirty = False
        self.unwritten = 0          # records lost to a full disk, not yet reported
        self.unwritten_total = 0
        self._warned = False
        self._compressor: threading.Thread | None = None

    binary = True  # JsonSink hands it encoded lines

    # -- the stream API used by JsonSink ---------------------------------
    def write(self, lines: str | bytes) -> None:
        """One or more whole lines, each ending in a newline."""
        data = lines.encode() if isinstance(lines, str) else lines
        self._lines.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines; fsync when due."""
        if self._lines:
            records, self._lines, self._pending_bytes = self._lines, [], 0
            self._write_records(records)
        if self._dirty and (self.fsync_always or self.clock() - self._last_fsync >= FSYNC_INTERVAL_S):
            self.sync()

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
        self._dirty = False
        self._last_fsync = self.clock()

    def close(self) -> None:
        self.flush()
        if self._dirty:
            self.sync()
        os.close(self.fd)
        if self._compressor:
            self._compressor.join()

    def reopen(self) -> None:
        """Open PATH afresh (SIGHUP): logrotate has moved the old file."""
        self.flush()
        self.sync()
        fd = open_log(self.path)
        os.close(self.fd)
        self.fd = fd
        self.size = os.fstat(fd).st_size

    # -- internals --------------------------------------------------------
    def _write_records(self, chunks: list[bytes]) -> None:
        note = (dumps({"type": RecordType.UNWRITTEN.value, "records": self.unwritten, "reason": "disk full"})
                + "\n").encode() if self.unwritten else b""
        data = note + b"".join(chunks)
        if self.rotate_size and self.size and self.size + len(data) > self.rotate_size:
            self._rotate()
        try:
            n = os.write(self.fd, data)
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
            n = 0
        self._dirty = True
        if n == len(data):
            self.size += n
            self.unwritten = 0
            return
        # Disk full: keep the complete lines written, cut a partial one.
        done = data.rfind(b"\n", 0, n) + 1
        if done < n:
            os.ftruncate(self.fd, self.size + done)
        self.size += done
        if note and done >= len(note):
            self.unwritten = 0
        lost = data.count(b"\n", max(done, len(note)))  # record lines not written
        self.unwritten += lost
        self.unwritten_total += lost
        if not self._warned:
            self._warned = True
            self.err.write(f"socktrace: WARNING: {self.path}: disk full; tracing goes on, "
                           "records that cannot be written are counted\n")
            self.err.flush()

    def _rotated(self, n: int) -> str:
        return f"{self.path}.{n}"

    def _rotate(self) -> None:
        if self._compressor:
            self._compressor.join()  # the previous PATH.1 is complete
            self._compressor = None
        self.sync()
        for suffix in ("", ".gz"):  # the oldest goes
            try:
                os.unlink(self._rotated(self.rotate_keep) + suffix)
            except FileNotFoundError:
                pass
        for n in range(self.rotate_keep - 1, 0, -1):
            for suffix in ("", ".gz"):
                src = self._rotated(n) + suffix
                if os.path.lexists(src):
                    os.rename(src, self._rotated(n + 1) + suffix)
        os.rename(self.path, self._rotated(1))
        os.close(self.fd)
        self.fd = open_log(self.path)
        self.size = 0
        if self.gzip_rotated:
            self._compressor = threading.Thread(target=_gzip_file, args=(self._rotated(1),),
                                                daemon=True)
            self._compressor.start()


def _gzip_file(path: str) -> None:
    """path -> path.gz, atomically, then remove path."""
    tmp = path + ".gz.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(path, "rb") as src, os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        raw.flush()
        os.fsync(raw.fileno())
    os.rename(tmp, path + ".gz")
    os.unlink(path)
