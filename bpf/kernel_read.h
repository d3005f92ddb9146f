/* SPDX-License-Identifier: MIT
 *
 * kernel_read.h - read the few kernel struct fields socktrace needs.
 *
 * Two sources of field offsets, one list of fields (kernel_fields.h), one
 * set of readers:
 *  - the running kernel's BTF (/sys/kernel/btf/vmlinux), whether headers are
 *    installed or not: Python reads the offsets there and passes them as
 *    -DOFF_... cflags (socktrace/probes.py, kernel/btf.py), and the program
 *    compiles against a small synthetic header tree;
 *  - only without usable BTF, SOCKTRACE_KERNEL_HEADERS: offsetof() on the
 *    structs of the kernel's own headers.
 * Every read goes through bpf_probe_read_kernel(), so a wrong pointer gives
 * zeroes, never a fault.
 */
#ifndef __SOCKTRACE_KERNEL_READ_H
#define __SOCKTRACE_KERNEL_READ_H

#ifdef SOCKTRACE_KERNEL_HEADERS
#include <net/sock.h>
#include <net/inet_sock.h>
#include <linux/tcp.h>      /* struct tcp_sock */
#include <linux/fdtable.h>
#include <linux/mm_types.h>
#include <linux/sched.h>
#include <linux/filter.h>   /* struct bpf_sock_addr_kern */
/* The offsets of kernel_fields.h's list, from the headers. */
enum {
#define KERNEL_FIELD(name, type, path) OFF_##name = offsetof(struct type, path),
#define KERNEL_INT_FIELD(name, type, path)   /* spelled out below */
#include "kernel_fields.h"
#undef KERNEL_FIELD
#undef KERNEL_INT_FIELD
};
/* skc_ipv6only shares the byte after skc_state with skc_reuse:4 and
 * skc_reuseport:1, a layout unchanged since Linux 3.9 (include/net/sock.h). */
#define OFF_SKC_IPV6ONLY    (offsetof(struct sock_common, skc_state) + 1)
#define SKC_IPV6ONLY_SHIFT  5
#define SKC_IPV6ONLY_MASK   1
#ifdef SK_FL_PROTO_SHIFT
/* Before Linux 5.6 sk_protocol was an 8-bit bit-field, found through the
 * marker __sk_flags_offset and these SK_FL_PROTO_* constants; 5.6 made it a
 * u16 and dropped them (https://github.com/torvalds/linux/commit/bf9765145b85) */
#define OFF_SK_PROTOCOL     offsetof(struct sock, __sk_flags_offset)
#define SK_PROTOCOL_SHIFT   SK_FL_PROTO_SHIFT
#define SK_PROTOCOL_MASK    (SK_FL_PROTO_MASK >> SK_FL_PROTO_SHIFT)
#else
#define OFF_SK_PROTOCOL     offsetof(struct sock, sk_protocol)
#define SK_PROTOCOL_SHIFT   0
#define SK_PROTOCOL_MASK    0xffff
#endif
#endif

#include "socktrace.h"

#ifndef AF_INET  /* from the kernel headers, if any */
#define AF_INET  2
#define AF_INET6 10
#endif

/* read_u8() .. read_u64(): the integer of that width at base + off, 0 when
 * unreadable */
#define DEFINE_READ(type)							\
static __always_inline type read_##type(const void *base, u32 off)		\
{										\
	type v = 0;								\
	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);	\
	return v;								\
}
DEFINE_READ(u8)
DEFINE_READ(u16)
DEFINE_READ(u32)
DEFINE_READ(u64)

/* An integer field of any width, bit-fields included, in one load. */
#define read_int(base, field) \
	((read_u32(base, OFF_##field) >> field##_SHIFT) & field##_MASK)

static __always_inline u8 sock_ipv6only(const void *sk)
{
	return read_int(sk, SKC_IPV6ONLY);
}

static __always_inline u16 sock_protocol(const void *sk)
{
	return read_int(sk, SK_PROTOCOL);
}

static __always_inline u16 sock_family(const void *sk)
{
	return read_u16(sk, OFF_SKC_FAMILY);
}

/* Fill the addresses, ports, family and netns of `e` from socket `sk`. */
static __always_inline void read_sock(struct event *e, const void *sk)
{
	void *net;

	e->sk = (u64)sk;
	e->family = sock_family(sk);
	e->sport = read_u16(sk, OFF_SKC_NUM);          /* host order already */
	e->dport = __builtin_bswap16(read_u16(sk, OFF_SKC_DPORT));
	if (e->family == AF_INET6) {
		bpf_probe_read_kernel(e->saddr, 16, (const char *)sk + OFF_SKC_V6_RCV_SADDR);
		bpf_probe_read_kernel(e->daddr, 16, (const char *)sk + OFF_SKC_V6_DADDR);
	} else {
		bpf_probe_read_kernel(e->saddr, 4, (const char *)sk + OFF_SKC_RCV_SADDR);
		bpf_probe_read_kernel(e->daddr, 4, (const char *)sk + OFF_SKC_DADDR);
	}
	net = (void *)read_u64(sk, OFF_SKC_NET);
	e->netns = net ? read_u32(net, OFF_NET_INUM) : 0;
}

/* The socket behind file descriptor `fd` of the current task:
 * current->files->fdt->fd[fd]->private_data (a struct socket) ->sk.
 * Used where only the fd is known (the accept syscalls' exit). */
static __always_inline void *sock_from_fd(int fd)
{
	void *task = (void *)bpf_get_current_task();
	void *files = (void *)read_u64(task, OFF_TASK_FILES);
	void *fdt, **fdarr, *file, *sock;

	if (!files)
		return 0;
	fdt = (void *)read_u64(files, OFF_FILES_FDT);
	if (!fdt)
		return 0;
	if (fd < 0 || (u32)fd >= read_u32(fdt, OFF_FDT_MAX_FDS))
		return 0;
	fdarr = (void **)read_u64(fdt, OFF_FDT_FD);
	file = (void *)read_u64(fdarr, (u32)fd * sizeof(void *));
	if (!file)
		return 0;
	sock = (void *)read_u64(file, OFF_FILE_PRIVATE);
	if (!sock)
		return 0;
	return (void *)read_u64(sock, OFF_SOCKET_SK);
}

/* The current process's name: its thread group leader's comm, which
 * /proc/PID/comm and netstat show (a JVM is "java" while the thread that
 * accepts is "http-nio-8080-A").  Read in the kernel, so it is right for a
 * process that is gone by the time Python could look. */
static __always_inline void read_process_name(char *dst)
{
	void *task = (void *)bpf_get_current_task();
	void *leader = (void *)read_u64(task, OFF_TASK_GROUP_LEADER);

	if (leader)
		bpf_probe_read_kernel(dst, COMM_LEN, (const char *)leader + OFF_TASK_COMM);
}

/* Copy the current process's argv area (mm->arg_start..arg_end) into `c`. */
static __always_inline void read_cmdline(struct cmdline_event *c)
{
	void *task = (void *)bpf_get_current_task();
	void *mm = (void *)read_u64(task, OFF_TASK_MM);
	u64 start, len;

	c->len = 0;
	c->truncated = 0;
	if (!mm)
		return;  /* a kernel thread */
	start = read_u64(mm, OFF_MM_ARG_START);
	len = read_u64(mm, OFF_MM_ARG_END) - start;
	if (len >= CMDLINE_MAX) {
		len = CMDLINE_MAX - 1;
		c->truncated = 1;
	}
	len &= CMDLINE_MAX - 1;  /* a bound the verifier can see */
	if (len && bpf_probe_read_user(c->args, len, (void *)start) == 0)
		c->len = len;
}

#endif /* __SOCKTRACE_KERNEL_READ_H */
