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

/* the kernel's TASK_COMM_LEN, which is an enum in its own headers */
#define COMM_LEN 16

/* enum event_type: the first byte of every record Python receives */
#define EVENT_ACCEPT     1  /* accept() returned a new connection        */
#define EVENT_CONNECT    2  /* a connect completed its handshake (sent at
                               ESTABLISHED in every mode; ts_ns is when
                               its SYN went out)                         */
#define EVENT_UNACCEPTED 3  /* handshake done, still in the accept queue */
#define EVENT_EXEC       4  /* a process we reported on exec'd or exited:
                               its command line is stale (struct event)  */
#define EVENT_CMDLINE    5  /* the command line of a process, sent before
                               its first connection (struct cmdline_event) */
#define EVENT_CONNECT_FAILED 6  /* a connect() that never completed its
                               handshake: `err` says why                 */
#define EVENT_UDP_IN     7  /* a UDP flow's first datagram, received     */
#define EVENT_UDP_OUT    8  /* a UDP flow's first datagram, sent         */
#define EVENT_CLOSE      9  /* a TCP connection reported as accept or
                               connect, or a UDP flow, ended (--lifetime):
                               struct close_event                        */

/* v6only when it is not known (AF_INET sockets, connects) */
#define V6ONLY_UNKNOWN 0xff

struct event {
	__u8  type;         /* EVENT_* */
	__u8  v6only;       /* listener's IPV6_V6ONLY: 0, 1 or V6ONLY_UNKNOWN */
	__u16 family;       /* the socket's family: AF_INET or AF_INET6 */
	__u32 pid;          /* process (tgid); 0 when unknown */
	__u64 cgroup_id;    /* cgroup v2 id: the inode of its cgroupfs directory */
	__u32 tid;
	__u32 uid;
	__u32 netns;        /* network namespace inode number */
	__u32 err;          /* EVENT_CONNECT_FAILED: errno: sk_err when the
	                       handshake ended, tcp_v*_connect()'s error when
	                       it failed before the SYN; 0 when the socket was
	                       closed without an error                     */
	__u8  saddr[16];    /* local address */
	__u8  daddr[16];    /* peer address */
	char  comm[COMM_LEN];        /* the thread's name */
	/* Last, what differs between the connections of one thread and
	 * address pair: Python copies the rest from the previous such
	 * connection's record (events.origin). */
	__u16 sport;        /* local port */
	__u16 dport;        /* peer port */
	__u64 ts_ns;        /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 sk;           /* kernel address of the socket: a connection id */
};

/* A process as the kernel knows it, read at its first connection (and
 * again after an exec), so its name and command line are right even when
 * it exits or execs before Python could read /proc.  Once per process, not
 * per event: a connection's event costs nothing more.  `args` is
 * NUL-separated like /proc/PID/cmdline; len 0 when the pages were not
 * resident (Python then reads /proc). */
#define CMDLINE_MAX 512

struct cmdline_event {
	__u8  type;         /* EVENT_CMDLINE */
	__u8  truncated;    /* the command line was longer than CMDLINE_MAX */
	__u16 len;
	__u32 pid;
	char  process[COMM_LEN];  /* its name: the thread group leader's comm */
	char  args[CMDLINE_MAX];
};

/* Who ended a connection: who sent the first FIN, or a reset (received,
 * or sent by an abortive close: SO_LINGER 0, unread data at close()). */
#define CLOSED_BY_LOCAL 1
#define CLOSED_BY_PEER  2
#define CLOSED_BY_RESET 3
/* How a UDP flow ended: CLOSED_BY_LOCAL when its socket was closed here,
 * or no datagram for --udp-idle seconds */
#define CLOSED_BY_IDLE  4

/* A connection's or UDP flow's end (--lifetime): the event it was
 * reported with, then what it carried.  conn.type is EVENT_CLOSE and
 * conn.ts_ns the time of its close (a UDP flow's: its last datagram);
 * start_ns the ts_ns it was reported with. */
struct close_event {
	struct event conn;
	__u64 start_ns;
	__u64 bytes_acked;     /* TCP: payload sent and acknowledged by the peer
	                          (tcp_sock.bytes_acked without SYN and FIN);
	                          UDP: payload sent */
	__u64 bytes_received;  /* payload received (TCP: tcp_sock.bytes_received
	                          without the peer's FIN) */
	__u32 retransmits;     /* tcp_sock.total_retrans: segments */
	__u8  closed_by;       /* CLOSED_BY_* */
	__u8  opened_by;       /* the type it was reported with: EVENT_ACCEPT,
	                          EVENT_CONNECT, EVENT_UDP_IN or EVENT_UDP_OUT */
	__u8  udp_bytes;       /* UDP: 1 when bytes_* count its datagrams'
	                          payload (kernels with sock_send_length and
	                          sock_recv_length), 0 when no hook saw them */
	__u8  pad;
	__u64 datagrams_sent;  /* UDP only */
	__u64 datagrams_received;
};

/* A UDP flow followed to its end (--lifetime): the `udp_flows` map's
 * value, which Python's sweep reads for the flows idle or whose socket
 * closed.  end.conn is the flow's udp event; end.opened_by 0 when a
 * kernel-side filter kept it from being reported (it has no end either). */
struct udp_flow {
	__u64 seen;            /* its last datagram: bpf_ktime_get_ns() */
	struct close_event end;
};

/* A reported TCP connection while it is open (--lifetime, --metrics): the
 * event it was reported with and its process's name (the thread group
 * leader's comm, as struct cmdline_event's), the owner its bytes count for
 * when it ends in softirq context. */
struct life {
	struct event conn;
	char  process[COMM_LEN];
};

/* The peer family a connection's bytes are counted under (--metrics) */
#define TRAFFIC_IPV4        0
#define TRAFFIC_IPV6        1
#define TRAFFIC_IPV4_MAPPED 2   /* an AF_INET6 socket, an IPv4-mapped peer */

/* Key and value of the `traffic` map: the payload of the TCP connections
 * that ended, by process name and peer family, summed in the kernel and
 * read at scrape time.  An empty process name holds the names that found
 * the map full (Python creates those keys at load). */
struct traffic_key {
	char  process[COMM_LEN];
	__u8  family;          /* TRAFFIC_* */
	__u8  pad[7];
};

struct traffic {
	__u64 bytes_sent;      /* as close_event's bytes_acked */
	__u64 bytes_received;
};

/* Index of the counters in the `stats` map.  Python knows each counter by
 * the lower-case rest of its name (STAT_LOST: `lost`), in records, the
 * metrics and socktrace/vocabulary.py's Drops alike. */
#define STAT_LOST                 0  /* events the ring/perf buffer had no room for */
#define STAT_UNACCEPTED_UNTRACKED 1  /* queued connections (children between their
                                        clone and accept()) the pending map had
                                        no room for */
#define STAT_MAX                  2

#endif /* __SOCKTRACE_H */
