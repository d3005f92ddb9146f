"""The floor under socktrace's UDP hooks: its four cgroup socket-address
programs' attach points with EMPTY programs (return 1), linked the way
socktrace links its own (kernel/cgroup_bpf.py), held until SIGTERM.
bench/dns_bench.py measures DNS under these beside socktrace: what the
kernel's hook costs a datagram (a lock_sock() and a program run, in
udp_sendmsg and udp_recvmsg) before any work of socktrace's."""

import os
import signal
import sys

from socktrace import probes
from socktrace.bcc_import import import_bcc
from socktrace.kernel.cgroup_bpf import CgroupLinks
from socktrace.kernel.tracefs import tracefs_root


def main() -> None:
    bcc = import_bcc()
    loader = probes.Loader(bcc, tracefs=tracefs_root())   # the header tree bcc compiles against
    os.environ["BCC_KERNEL_SOURCE"] = str(loader.header_tree)
    b = bcc.BPF(text="".join(f"int {name}(struct bpf_sock_addr *ctx) {{ return 1; }}\n"
                             for name, _ in probes.UDP_PROGRAMS))
    lib = bcc.libbcc.lib
    links = CgroupLinks()
    for name, attach_type in probes.UDP_PROGRAMS:
        fn = name.encode()
        links.attach(lib.bpf_function_start(b.module, fn), lib.bpf_function_size(b.module, fn),
                     b"GPL", attach_type, fn)
    print("ready", flush=True)
    signal.sigwait([signal.SIGTERM])
    links.close()
    loader.close()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    sys.exit(main())
