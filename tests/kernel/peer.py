"""Helper processes for the kernel tests: each role prints JSON lines.

  serve FAMILY V6ONLY N     listen, print {"port"}, accept N, print each peer
  block-accept              listen, print {"port"}, block in accept(), print peer
  block-accept-close        the same, but answer and close the connection at once
  plain-accept              listen (dual-stack), print {"port", "pid"}, wait for a
                            line on stdin, accept with the accept() system call
                            (not accept4), print {"pid", "lport", "rport", "raddr"}
  listen-only               listen, print {"port"}, never accept
  burst PORT N              N short-lived IPv4 connections to PORT; prints
                            {"done": N} and then {"ports": [its local ports]}
  connect-exec PORT         connect, then exec itself to connect again
  evil-connect PORT         rename itself with terminal escapes, connect
  fork-serve W PER          listen (dual-stack), fork W workers that accept PER
                            connections each; print {"port", "workers"}, and
                            each worker {"worker", "accepted"} when done
  thread-accept-exit        listen (dual-stack), print {"port", "process"}; a
                            thread named "acceptor" accepts one connection and
                            the process exits at once
"""

import json
import os
import socket
import sys
import time

import helpers  # beside this file


def say(**kw):
    # one write of the whole line: forked workers share stdout, and print()
    # writes the text and its newline apart (seen interleaved under load)
    os.write(1, (json.dumps(kw) + "\n").encode())


def listener(family=socket.AF_INET6, v6only=0):
    return helpers.listener(family, v6only, backlog=4096)


def main(role, *args):
    if role == "serve":
        family = {"6": socket.AF_INET6, "4": socket.AF_INET}[args[0]]
        ls = listener(family, int(args[1]))
        say(port=ls.getsockname()[1])
        for _ in range(int(args[2])):
            conn, _ = ls.accept()
            conn.close()
        say(done=True)
        sys.stdin.read()
    elif role in ("block-accept", "block-accept-close"):
        ls = listener()
        say(port=ls.getsockname()[1])
        conn, peer = ls.accept()
        if role == "block-accept-close":   # a short connection: answered, closed
            conn.sendall(b"bye")
            conn.close()
        say(peer_port=peer[1])
        sys.stdin.read()
    elif role == "plain-accept":
        # glibc's accept(): the accept system call (socket.accept() calls
        # accept4); the test checks which one it blocks in (/proc/PID/syscall)
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.accept.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        ls = listener()
        say(port=ls.getsockname()[1], pid=os.getpid())
        sys.stdin.readline()
        fd = libc.accept(ls.fileno(), None, None)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "accept")
        conn = socket.socket(fileno=fd)
        peer = conn.getpeername()
        say(pid=os.getpid(), lport=conn.getsockname()[1], rport=peer[1], raddr=peer[0])
        sys.stdin.read()
    elif role == "listen-only":
        ls = listener()
        say(port=ls.getsockname()[1])
        sys.stdin.read()
    elif role == "burst":
        port, n = int(args[0]), int(args[1])
        ports = []
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port))
            ports.append(c.getsockname()[1])
            c.close()
        say(done=n)
        say(ports=ports)
        sys.stdin.read()
    elif role == "connect-exec":
        port = int(args[0])
        c = socket.create_connection(("127.0.0.1", port))
        say(first_port=c.getsockname()[1])
        if len(args) == 1:
            os.execv(sys.executable, [sys.executable, __file__, role, str(port), "again"])
        time.sleep(0.2)
        say(done=True)
        sys.stdin.read()
    elif role == "evil-connect":
        import ctypes
        ctypes.CDLL(None).prctl(15, b"ev\x1b[31mil\x07", 0, 0, 0)  # PR_SET_NAME
        c = socket.create_connection(("127.0.0.1", int(args[0])))
        say(port=c.getsockname()[1])
        sys.stdin.read()
    elif role == "fork-serve":
        workers, per = int(args[0]), int(args[1])
        ls = listener()
        pids = []
        for _ in range(workers):
            pid = os.fork()
            if pid == 0:   # a worker, as a preforking server's (same command line)
                import ctypes
                ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)   # PR_SET_PDEATHSIG: SIGKILL with its parent
                for _ in range(per):
                    ls.accept()[0].close()
                say(worker=os.getpid(), accepted=per)
                sys.stdin.read()
                os._exit(0)
            pids.append(pid)
        say(port=ls.getsockname()[1], workers=pids)
        sys.stdin.read()
    elif role == "thread-accept-exit":
        import ctypes
        import threading
        ls = listener()
        say(port=ls.getsockname()[1], process=open("/proc/self/comm").read().strip())

        def acceptor():
            ctypes.CDLL(None).prctl(15, b"acceptor", 0, 0, 0)   # PR_SET_NAME: this thread
            ls.accept()
            os._exit(0)   # gone before anything could read /proc
        threading.Thread(target=acceptor).start()
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main(*sys.argv[1:])
