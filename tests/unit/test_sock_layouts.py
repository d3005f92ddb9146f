"""sk_protocol before and after Linux 5.6, with structs of both layouts.

Linux 5.6 made sk_protocol a u16; before, it was an 8-bit bit-field after
the marker __sk_flags_offset, with SK_FL_PROTO_SHIFT/MASK describing it
(https://github.com/torvalds/linux/commit/bf9765145b85).  Reading the old
layout as a u16 gives protocol | type << 8 and drops every event, so both
ways socktrace learns the layout are checked against structs of each kind,
filled by gcc: the kernel's BTF (here gcc -gbtf's, of the same struct) and
the kernel headers (kernel_read.h compiled against a header of that layout).
"""

import struct
import subprocess

import pytest

pytestmark = pytest.mark.host_tools

from socktrace.kernel.btf import BTF
from socktrace.kernel.sources import bpf_source_dir
from socktrace.probes import btf_defines

IPPROTO_TCP, SOCK_STREAM = 6, 1

# include/net/sock.h of Linux 4.19 (RHEL 8's 4.18, Ubuntu 20.04's 5.4 alike)
# and of 5.6+, reduced to what comes before and around sk_protocol
OLD = """
struct sock {
	struct sock_common __sk_common;
	unsigned long long sk_before;
	unsigned int __sk_flags_offset[0];
#ifdef __BIG_ENDIAN_BITFIELD
#define SK_FL_PROTO_SHIFT  16
#define SK_FL_PROTO_MASK   0x00ff0000
#else
#define SK_FL_PROTO_SHIFT  8
#define SK_FL_PROTO_MASK   0x0000ff00
#endif
	unsigned int sk_padding : 1, sk_kern_sock : 1, sk_no_check_tx : 1,
		     sk_no_check_rx : 1, sk_userlocks : 4, sk_protocol : 8, sk_type : 16;
	unsigned int sk_uid;
	int sk_err;
};
"""
NEW = """
struct sock {
	struct sock_common __sk_common;
	unsigned long long sk_before;
	unsigned char sk_padding : 1, sk_kern_sock : 1, sk_no_check_tx : 1,
		      sk_no_check_rx : 1, sk_userlocks : 4;
	unsigned char sk_pacing_shift;
	unsigned short sk_type;
	unsigned short sk_protocol;
	unsigned int sk_uid;
	int sk_err;
};
"""
COMMON = """
struct sock_common {
	unsigned int skc_daddr, skc_rcv_saddr;
	unsigned short skc_dport, skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	unsigned char skc_reuse : 4, skc_reuseport : 1, skc_ipv6only : 1;
	void *skc_net;
	unsigned char skc_v6_daddr[16], skc_v6_rcv_saddr[16];
	unsigned long long skc_cookie;
	unsigned long skc_flags;
};
"""
# one struct sock filled: TCP, and its neighbours set so that they would
# leak into a wrong read
FILL = """
#include <stdio.h>
#include <string.h>
static void fill(struct sock *sk)
{
	memset(sk, 0, sizeof(*sk));
	sk->sk_protocol = %d;
	sk->sk_type = %d;
	sk->sk_userlocks = 0xf;
	sk->sk_padding = 1;
	sk->__sk_common.skc_ipv6only = 1;
	sk->__sk_common.skc_reuse = 0xf;
}
""" % (IPPROTO_TCP, SOCK_STREAM)
# ... whose bytes a process writes out
WRITE = """
int main(void) { struct sock sk; fill(&sk); fwrite(&sk, sizeof(sk), 1, stdout); return 0; }
"""


def compile_and_run(tmp_path, source, *cflags):
    src, exe = tmp_path / "t.c", tmp_path / "t"
    src.write_text(source)
    subprocess.run(["gcc", "-O0", *cflags, "-o", str(exe), str(src)], check=True)
    return subprocess.run([str(exe)], capture_output=True, check=True).stdout


@pytest.mark.parametrize("layout", [OLD, NEW], ids=["before-5.6", "5.6+"])
def test_btf_path_reads_sk_protocol(tmp_path, layout):
    """gcc describes the struct in BTF as the kernel's own BTF would;
    socktrace's reader (kernel_read.h: read_int) must find TCP in it."""
    image = compile_and_run(tmp_path, COMMON + layout + INET + OTHERS + ACCEPT + FILL + WRITE, "-gbtf")
    subprocess.run(["objcopy", "--dump-section", f".BTF={tmp_path / 'btf'}", str(tmp_path / "t")],
                   check=True)
    with BTF(str(tmp_path / "btf")) as btf:
        d = btf_defines(btf)   # the -D values the BPF program is compiled with
    for field, want in (("SK_PROTOCOL", IPPROTO_TCP), ("SKC_IPV6ONLY", 1)):
        word = struct.unpack_from("<I", image, d[f"OFF_{field}"])[0]
        assert (word >> d[f"{field}_SHIFT"]) & d[f"{field}_MASK"] == want


HARNESS = """
#include <string.h>
#include <stddef.h>
typedef unsigned char u8, __u8; typedef unsigned short u16, __u16;
typedef unsigned int u32, __u32; typedef unsigned long long u64, __u64;
typedef _Bool bool;
#define __always_inline inline __attribute__((always_inline))
static long bpf_probe_read_kernel(void *dst, u32 size, const void *src)
{ memcpy(dst, src, size); return 0; }
static long bpf_probe_read_user(void *dst, u32 size, const void *src)
{ memcpy(dst, src, size); return 0; }
static u64 bpf_get_current_task(void) { return 0; }
"""
# the other structs kernel_read.h reads, and the function kfunc mode probes
OTHERS = """
struct ns_common { unsigned int inum; };
struct net { struct ns_common ns; };
struct task_struct { void *files, *mm; struct task_struct *group_leader; char comm[16]; };
struct files_struct { void *fdt; };
struct fdtable { unsigned int max_fds; void **fd; };
struct file { void *private_data; };
struct socket { void *sk; };
struct mm_struct { unsigned long arg_start, arg_end; };
struct bpf_sock_addr_kern { struct sock *sk; void *uaddr; };
"""
INET = ("struct inet_sock { struct sock sk; unsigned short inet_sport; };\n"
        "struct tcp_sock { struct inet_sock inet; unsigned long long bytes_received, bytes_acked;"
        " unsigned int total_retrans, snd_una, write_seq; };\n")
ACCEPT = """
/* gcc describes only the types that something uses */
struct net n; struct task_struct t; struct files_struct fs; struct fdtable ft;
struct file f; struct socket so; struct mm_struct mm; struct inet_sock is;
struct bpf_sock_addr_kern sa; struct tcp_sock tp;
struct sock *inet_csk_accept(struct sock *sk, int flags, int *err, _Bool kern) { return sk; }
"""
# ... that kernel_read.h reads
READ = """
int main(void) { struct sock sk; fill(&sk); printf("%d %d", sock_protocol(&sk), sock_ipv6only(&sk)); return 0; }
"""


@pytest.mark.parametrize("layout", [OLD, NEW], ids=["before-5.6", "5.6+"])
def test_headers_path_reads_sk_protocol(tmp_path, layout):
    """kernel_read.h compiled against kernel headers of either layout (here
    a net/sock.h holding the struct) reads TCP and the v6only bit."""
    inc = tmp_path / "include"
    for h in ("linux/fdtable.h", "linux/mm_types.h", "linux/sched.h", "linux/filter.h"):
        (inc / h).parent.mkdir(parents=True, exist_ok=True)
        (inc / h).write_text("")
    (inc / "net").mkdir()
    (inc / "net/inet_sock.h").write_text(INET)
    (inc / "net/sock.h").write_text(COMMON + layout)
    out = compile_and_run(tmp_path, HARNESS + OTHERS + '#include "kernel_read.h"\n' + FILL + READ,
                          "-DSOCKTRACE_KERNEL_HEADERS", f"-I{inc}", f"-I{bpf_source_dir()}",
                          "-Wno-int-to-pointer-cast", "-Wno-pointer-to-int-cast")
    assert out == b"%d 1" % IPPROTO_TCP
