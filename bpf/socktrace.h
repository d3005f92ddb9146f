/* SPDX-License-Identifier: MIT
 *
 * socktrace.h - the contract between the BPF program and Python.
 *
 * Python mirrors `struct event` field for field (socktrace/events.py);
 * change both together.
 *
 * Byte order: addresses are in network byte order, exactly as the kernel
 * keeps them; ports are in host byte order.  An AF_INET address fills the
 * first 4 bytes of the 16-byte address fields.
 */
#ifndef __SOCKTRACE_H
#define __SOCKTRACE_H

#define TASK_COMM_LEN 16

/* enum event_type */
#define EVENT_ACCEPT     1  /* accept() returned a new connection        */
#define EVENT_CONNECT    2  /* connect() sent a SYN                      */
#define EVENT_UNACCEPTED 3  /* handshake done, still in the accept queue */
#define EVENT_EXEC       4  /* a process we reported on exec'd or exited:
                               Python drops its cached command line      */

/* v6only when it is not known (AF_INET sockets, connects) */
#define V6ONLY_UNKNOWN 0xff

struct event {
	__u64 ts_ns;        /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 sk;           /* kernel address of the socket: a connection id */
	__u64 cgroup_id;
	__u32 pid;          /* process (tgid); 0 when unknown */
	__u32 tid;
	__u32 uid;
	__u32 netns;        /* network namespace inode number */
	__u8  saddr[16];    /* local address */
	__u8  daddr[16];    /* peer address */
	__u16 sport;        /* local port */
	__u16 dport;        /* peer port */
	__u16 family;       /* the socket's family: AF_INET or AF_INET6 */
	__u8  type;         /* EVENT_* */
	__u8  v6only;       /* listener's IPV6_V6ONLY: 0, 1 or V6ONLY_UNKNOWN */
	char  comm[TASK_COMM_LEN];
};

/* Index of the counters in the `stats` map. */
#define STAT_LOST      0  /* events the ring/perf buffer had no room for */
#define STAT_PENDING_FULL 1  /* unaccepted connections the pending map had no room for */
#define STAT_MAX       2

#endif /* __SOCKTRACE_H */
