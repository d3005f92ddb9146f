/* SPDX-License-Identifier: MIT
 *
 * socktrace.bpf.c - report new TCP connections with their socket family.
 *
 * Python compiles this with bcc and picks the probe strategy with one of
 *   -DPROBE_KFUNC       fexit on inet_csk_accept and tcp_v6_connect
 *   -DPROBE_KPROBE      kprobe/kretprobe on the same functions
 *   -DPROBE_TRACEPOINT  inet_sock_set_state + the syscalls' exits, for
 *                       kernels with neither kprobes nor fentry
 * and the settings MAPPED_ONLY, FILTER_PID, USE_RINGBUF, RINGBUF_PAGES,
 * PENDING_MAX, ACCEPT_NARGS (see socktrace/probes.py).
 *
 * Three things are shared by all strategies:
 *  - the (raw) tracepoint inet_sock_set_state keeps `pending`, the
 *    connections that finished the handshake and are not accepted yet; an
 *    accept removes its entry, Python reports the ones left too long;
 *  - the syscall exits of accept()/accept4() back up the kernel-function
 *    probes, which miss an accept() that was already blocked when they were
 *    attached (https://github.com/iovisor/bcc/issues/2165);
 *  - AF_INET connects are taken from the SYN_SENT transition and the exit of
 *    connect(), so no tcp_v4_connect probe exists to share state with
 *    tcp_v6_connect (a mapped connect runs one inside the other).
 */
#include "kernel_read.h"   /* kernel headers, where used, come first */
#include "socktrace.h"

#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
#ifndef EINPROGRESS
#define EINPROGRESS 115
#endif
/* include/net/tcp_states.h, an enum there */
#define STATE_ESTABLISHED 1
#define STATE_SYN_SENT 2
#define STATE_SYN_RECV 3
#define STATE_LISTEN 10

#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif
BPF_PERCPU_ARRAY(stats, u64, STAT_MAX);
/* socket -> its connection, from the listener's clone to accept() */
BPF_HASH(pending, u64, struct event, PENDING_MAX);
/* pids Python holds in its process cache: their exec/exit is reported.
 * LRU: an evicted pid only costs one more cmdline_event. */
BPF_TABLE("lru_hash", u32, u8, known_pids, 65536);
/* room for one cmdline_event per CPU: too big for the BPF stack */
BPF_PERCPU_ARRAY(cmdline_scratch, struct cmdline_event, 1);
/* thread -> socket, from the SYN_SENT transition to connect()'s return */
BPF_TABLE("lru_hash", u32, u64, connecting, 16384);

static __always_inline void count(u32 stat)
{
	u64 *v = stats.lookup(&stat);

	if (v)
		(*v)++;
}

/* ::ffff:a.b.c.d, the IPv4-mapped IPv6 address (RFC 4291 section 2.5.5.2) */
static __always_inline bool is_mapped(const struct event *e)
{
	const u32 *w = (const u32 *)e->daddr;

	return e->family == AF_INET6 && w[0] == 0 && w[1] == 0 &&
	       e->daddr[8] == 0 && e->daddr[9] == 0 &&
	       e->daddr[10] == 0xff && e->daddr[11] == 0xff;
}

static __always_inline void set_task(struct event *e)
{
	u64 id = bpf_get_current_pid_tgid();

	e->ts_ns = bpf_ktime_get_ns();
	e->pid = id >> 32;
	e->tid = (u32)id;
	e->uid = (u32)bpf_get_current_uid_gid();
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

static __always_inline bool is_tcp(const void *sk)
{
	u16 family = sock_family(sk);

	return (family == AF_INET || family == AF_INET6) &&
	       sock_protocol(sk) == IPPROTO_TCP;
}

static __always_inline void submit(void *ctx, void *data, u32 size)
{
	int err;

#ifdef USE_RINGBUF
	/* No wakeup per event: Python drains the ring every POLL_MS instead,
	 * which spares the producer an irq_work and the consumer an epoll
	 * return per event at high connection rates. */
	err = events.ringbuf_output(data, size, BPF_RB_NO_WAKEUP);
#else
	err = events.perf_submit(ctx, data, size);
#endif
	if (err)
		count(STAT_LOST);
}

/* The first connection of a process (since its last exec) carries its
 * command line, read now, while the process certainly exists. */
static __always_inline void introduce_process(void *ctx, u32 pid)
{
	u32 zero = 0;
	u8 one = 1;
	struct cmdline_event *c;

	if (known_pids.lookup(&pid))
		return;
	known_pids.update(&pid, &one);
	c = cmdline_scratch.lookup(&zero);
	if (!c)
		return;
	c->type = EVENT_CMDLINE;
	c->pid = pid;
	read_cmdline(c);
	submit(ctx, c, sizeof(*c));
}

/* Send `e`, from process context, to Python unless a kernel-side filter
 * drops it. */
static __always_inline void report(void *ctx, struct event *e)
{
	if (MAPPED_ONLY && !is_mapped(e))
		return;
	if (FILTER_PID && e->pid != FILTER_PID)
		return;
	introduce_process(ctx, e->pid);
	submit(ctx, e, sizeof(*e));
}

/* accept() handed `sk` to the current task.  `listener` is NULL where only
 * the new socket is known: it copied skc_ipv6only from its listener when it
 * was cloned (sk_clone_lock), so it tells the listener's flag then. */
static __always_inline void report_accept(void *ctx, void *sk, void *listener)
{
	struct event e = {};
	u64 key = (u64)sk;

	if (!is_tcp(sk))
		return;
	pending.delete(&key);
	e.type = EVENT_ACCEPT;
	set_task(&e);
	read_sock(&e, sk);
	e.v6only = e.family == AF_INET6 ? sock_ipv6only(listener ? listener : sk)
					: V6ONLY_UNKNOWN;
	report(ctx, &e);
}

/* connect() on `sk` sent its SYN: the 4-tuple is complete now. */
static __always_inline void report_connect(void *ctx, void *sk)
{
	struct event e = {};

	e.type = EVENT_CONNECT;
	set_task(&e);
	read_sock(&e, sk);
	e.v6only = V6ONLY_UNKNOWN;
	report(ctx, &e);
}

/* A listener cloned `sk` for a new connection (LISTEN -> SYN_RECV, in
 * softirq context, before the child enters the accept queue).  Remember it
 * now, without its addresses, which are set after the clone: accept() may
 * take the child from the queue before its SYN_RECV -> ESTABLISHED
 * transition runs on another CPU, and the entry must already exist for
 * accept() to remove it, or that transition would leave it behind. */
static __always_inline void track_child(const void *sk)
{
	struct event e = {};
	u64 key = (u64)sk;

	e.ts_ns = bpf_ktime_get_ns();  /* type 0: handshake not complete */
	if (pending.update(&key, &e))
		count(STAT_PENDING_FULL);
}

/* The handshake of `sk` completed, in softirq context where the current
 * task is not the owner: fill in the connection, unless accept() has
 * already taken it. */
static __always_inline void track_unaccepted(const void *sk)
{
	u64 key = (u64)sk;
	struct event *e = pending.lookup(&key);

	if (!e)
		return;
	e->type = EVENT_UNACCEPTED;
	e->ts_ns = bpf_ktime_get_ns();
	read_sock(e, sk);
	e->uid = read_u32(sk, OFF_SK_UID);  /* copied from the listener */
	e->v6only = e->family == AF_INET6 ? sock_ipv6only(sk) : V6ONLY_UNKNOWN;
	if (MAPPED_ONLY && !is_mapped(e))
		pending.delete(&key);
}

static __always_inline bool is_tcp_sock(const void *sk)
{
	return sock_protocol(sk) == IPPROTO_TCP;
}

/* The raw tracepoint, not sock:inet_sock_set_state: a TCP connection
 * passes about ten state changes and three of them matter.  The raw one
 * hands over (sk, oldstate, newstate) as they are and the others cost two
 * compares; the classic tracepoint first copies both addresses and ports
 * into a trace record for each of them. */
RAW_TRACEPOINT_PROBE(inet_sock_set_state)
{
	const void *sk = (const void *)ctx->args[0];
	int oldstate = (int)ctx->args[1], newstate = (int)ctx->args[2];
	u32 tid;
	u64 key;

	if (oldstate == STATE_LISTEN && newstate == STATE_SYN_RECV) {
		if (is_tcp_sock(sk))
			track_child(sk);
		return 0;
	}
	if (oldstate == STATE_SYN_RECV && newstate == STATE_ESTABLISHED) {
		track_unaccepted(sk);  /* only children track_child saw */
		return 0;
	}
	if (newstate != STATE_SYN_SENT || !is_tcp_sock(sk))
		return 0;
#ifndef PROBE_TRACEPOINT
	if (sock_family(sk) == AF_INET6)
		return 0;  /* the tcp_v6_connect probe reports these */
#endif
	/* Process context: the connecting thread.  The source port is picked
	 * after this transition (inet_hash_connect in tcp_v4_connect), so the
	 * event waits for connect() to return. */
	tid = (u32)bpf_get_current_pid_tgid();
	key = (u64)sk;
	connecting.update(&tid, &key);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 *sk = connecting.lookup(&tid);
	void *s;

	if (!sk)
		return 0;
	s = (void *)*sk;
	connecting.delete(&tid);
	if (args->ret == 0 || args->ret == -EINPROGRESS)
		report_connect(args, s);
	return 0;
}

static __always_inline void accept_returned(void *ctx, long fd)
{
	void *sk;

	if (fd < 0)
		return;
	sk = sock_from_fd(fd);
	if (!sk)
		return;
#ifndef PROBE_TRACEPOINT
	{
		/* only what the kernel-function probe missed */
		u64 key = (u64)sk;

		if (!pending.lookup(&key))
			return;
	}
#endif
	report_accept(ctx, sk, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept)
{
	accept_returned(args, args->ret);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
	accept_returned(args, args->ret);
	return 0;
}

/* A process Python has cached execs or exits: its command line is stale. */
static __always_inline void forget_task(void *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 pid = id >> 32;
	struct event e = {};

	if ((u32)id != pid || !known_pids.lookup(&pid))
		return;
	known_pids.delete(&pid);
	e.type = EVENT_EXEC;
	e.pid = pid;
	submit(ctx, &e, sizeof(e));
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	forget_task(args);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	forget_task(args);
	return 0;
}

#ifdef PROBE_KFUNC
#if ACCEPT_NARGS == 2
/* Linux 6.10 folded flags/err/kern into struct proto_accept_arg
 * 
 * (https://github.com/torvalds/linux/commit/92ef0fd55ac80dfc2e4654edfe5d1ddfa6e070fe) */
KRETFUNC_PROBE(inet_csk_accept, void *sk, void *arg, void *ret)
#else
KRETFUNC_PROBE(inet_csk_accept, void *sk, int flags, int *err, bool kern, void *ret)
#endif
{
	if (ret)
		report_accept(ctx, ret, sk);
	return 0;
}

KRETFUNC_PROBE(tcp_v6_connect, void *sk, void *uaddr, int addr_len, int ret)
{
	if (ret == 0)
		report_connect(ctx, sk);
	return 0;
}
#endif /* PROBE_KFUNC */

#ifdef PROBE_KPROBE
#include <asm/ptrace.h>  /* struct pt_regs, for PT_REGS_PARM1/PT_REGS_RC */

/* thread -> listener / connecting socket, entry to return.  Each function
 * has its own map: tcp_v6_connect calls tcp_v4_connect for a mapped peer,
 * and a shared thread key would be overwritten by the inner call. */
BPF_HASH(accepting, u32, u64, 16384);
BPF_HASH(v6connecting, u32, u64, 16384);

int kprobe__inet_csk_accept(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 sk = PT_REGS_PARM1(ctx);

	accepting.update(&tid, &sk);
	return 0;
}

int kretprobe__inet_csk_accept(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 *listener = accepting.lookup(&tid);
	void *sk = (void *)PT_REGS_RC(ctx);
	void *l;

	if (!listener)
		return 0;
	l = (void *)*listener;
	accepting.delete(&tid);
	if (sk)
		report_accept(ctx, sk, l);
	return 0;
}

int kprobe__tcp_v6_connect(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 sk = PT_REGS_PARM1(ctx);

	v6connecting.update(&tid, &sk);
	return 0;
}

int kretprobe__tcp_v6_connect(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 *sk = v6connecting.lookup(&tid);
	void *s;

	if (!sk)
		return 0;
	s = (void *)*sk;
	v6connecting.delete(&tid);
	if (PT_REGS_RC(ctx) == 0)
		report_connect(ctx, s);
	return 0;
}
#endif /* PROBE_KPROBE */
