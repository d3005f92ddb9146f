/* SPDX-License-Identifier: MIT
 *
 * socktrace.bpf.c - report new TCP connections with their socket family.
 *
 * Python compiles this with bcc and picks the probe strategy with one of
 *   -DPROBE_KFUNC       fexit on inet_csk_accept, tcp_v4_connect, tcp_v6_connect
 *   -DPROBE_KPROBE      kprobe/kretprobe on the same functions
 *   -DPROBE_TRACEPOINT  for kernels with neither: connects from their
 *                       state transitions, accepts from the exits of the
 *                       accept()/accept4() system calls
 * and the settings MAPPED_ONLY, FILTER_PID, SKIP_CGROUPS_MAX, NO_FAILED, USE_RINGBUF,
 * RINGBUF_PAGES, PENDING_MAX, ACCEPT_NARGS, and for UDP flows (every mode,
 * the end of this file) TRACE_UDP, UDP_IDLE_NS, UDP_FLOWS_MAX, HAVE_SOCK_LENGTH
 * (see socktrace/probes.py).
 *
 * Shared by all strategies, on the raw tracepoint inet_sock_set_state
 * (which costs nothing outside the state changes of TCP, DCCP and SCTP
 * sockets):
 *  - `pending` and `queued` follow a listener's children from their clone
 *    to accept(); Python reports those left there too long, and finds
 *    them by their addresses among the sockets sock_diag lists: one that a
 *    process holds (it has a socket inode) was taken by an accept the probes
 *    missed
 *    (one already blocked when they were attached,
 *    https://github.com/iovisor/bcc/issues/2165, or io_uring's in the
 *    tracepoint mode);
 *  - `connects` follows a connection from its SYN to the end of its
 *    handshake: keyed by socket, not by thread, so no path outside
 *    connect() (MSG_FASTOPEN, io_uring, kernel sockets) leaves anything
 *    stale behind; an attempt that ends in CLOSE is a failed connect.
 * Only the tracepoint mode attaches system call tracepoints: attaching any
 * puts every system call of every task on the kernel's slow path (+31 %
 * per getppid() measured, whatever the program does).
 */
#include "kernel_read.h"   /* kernel headers, where used, come first */
#include "socktrace.h"

#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
/* include/net/tcp_states.h, an enum there */
#define STATE_ESTABLISHED 1
#define STATE_SYN_SENT 2
#define STATE_SYN_RECV 3
#define STATE_FIN_WAIT1 4
#define STATE_FIN_WAIT2 5
#define STATE_TIME_WAIT 6
#define STATE_CLOSE 7
#define STATE_CLOSE_WAIT 8
#define STATE_LAST_ACK 9
#define STATE_LISTEN 10
#define STATE_CLOSING 11

#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif
BPF_PERCPU_ARRAY(stats, u64, STAT_MAX);
/* child socket -> when its listener cloned it, until accept() or its end */
BPF_HASH(pending, u64, u64, PENDING_MAX);
/* child socket -> its connection, once its handshake completed.  Apart
 * from `pending` so that nothing is ever written through a pointer into an
 * entry that accept() on another CPU may delete (and the kernel reuse): an
 * entry here counts only while `pending` holds its key. */
BPF_TABLE("lru_hash", u64, struct event, queued, PENDING_MAX);
#if defined(LIFETIME) || defined(TRAFFIC)
#define TRACK_LIVES
/* reported connection -> its accept or connect event, until it closes
 * (--lifetime, --metrics).  LRU: past LIVES_MAX open connections the
 * oldest-seen lose their close record and bytes (README, Limits), never a
 * new one its start. */
BPF_TABLE("lru_hash", u64, struct life, lives, LIVES_MAX);
#endif
#ifdef LIFETIME
/* socket cookie -> a connection open before tracing began, as Python found
 * it through sock_diag (which gave the socket its cookie), for its close
 * record (--lifetime; its ts_ns 0: the duration is not known) */
BPF_HASH(existed, u64, struct life, LIVES_MAX);
#endif
#ifdef TRAFFIC
/* the payload of the reported connections that ended, by process name and
 * peer family (--metrics): a few keys, summed here, read at scrape time */
BPF_HASH(traffic, struct traffic_key, struct traffic, TRAFFIC_MAX);
#endif
/* connecting socket -> its connect event, from the SYN to the end of the
 * handshake.  LRU: past PENDING_MAX connects in flight at once the oldest
 * are forgotten (README, Limits) rather than the newest refused. */
BPF_TABLE("lru_hash", u64, struct event, connects, PENDING_MAX);
/* pids Python holds in its process cache: their exec/exit is reported.
 * LRU: an evicted pid only costs one more cmdline_event. */
BPF_TABLE("lru_hash", u32, u8, known_pids, 65536);
/* room for one cmdline_event per CPU: too big for the BPF stack */
BPF_PERCPU_ARRAY(cmdline_scratch, struct cmdline_event, 1);
#ifdef SKIP_CGROUPS_MAX
/* --container: cgroups (v2 ids) of other containers, which Python learns
 * from their first events (it alone knows a container's name).  A cgroup
 * not listed yet goes to Python, which decides: learning can only make
 * the kernel skip what Python would drop. */
BPF_TABLE("lru_hash", u64, u8, skip_cgroups, SKIP_CGROUPS_MAX);
#endif

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

/* A TCP socket of either internet family, the only kind socktrace reports
 * (inet_sock_set_state fires for DCCP and SCTP sockets too). */
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
 * name and command line, read now, while the process certainly exists. */
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
	read_process_name(c->process);
	read_cmdline(c);
	submit(ctx, c, sizeof(*c));
}

/* Whether the kernel-side filters let `e` through. */
static __always_inline bool wanted(const struct event *e)
{
	if (MAPPED_ONLY && !is_mapped(e))
		return false;
	if (FILTER_PID && e->pid != FILTER_PID)
		return false;
#ifdef SKIP_CGROUPS_MAX
	if (skip_cgroups.lookup((u64 *)&e->cgroup_id))
		return false;
#endif
	return true;
}

/* Send `e`, from its process's context, to Python unless a kernel-side
 * filter drops it; whether it went. */
static __always_inline bool report(void *ctx, struct event *e)
{
	if (!wanted(e))
		return false;
	introduce_process(ctx, e->pid);
	submit(ctx, e, sizeof(*e));
	return true;
}

/* A connection was reported (accept, or connect at ESTABLISHED, both in
 * its process's context): with --lifetime or --metrics, keep its event
 * and its process's name for its end. */
static __always_inline void track_life(const void *sk, const struct event *e)
{
#ifdef TRACK_LIVES
	u64 key = (u64)sk;
	struct life l = {};

	l.conn = *e;
	read_process_name(l.process);
	lives.update(&key, &l);
#endif
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
	queued.delete(&key);
	e.type = EVENT_ACCEPT;
	set_task(&e);
	read_sock(&e, sk);
	e.v6only = e.family == AF_INET6 ? sock_ipv6only(listener ? listener : sk)
					: V6ONLY_UNKNOWN;
	if (report(ctx, &e))
		track_life(sk, &e);
}

/* A connect whose handshake will not complete: `e` is its connect event,
 * `err` its errno (the socket's sk_err, or tcp_v*_connect()'s error before
 * any SYN; 0: closed without one). */
static __always_inline void report_failed(void *ctx, struct event *e, u32 err)
{
	if (NO_FAILED)
		return;
	e->type = EVENT_CONNECT_FAILED;
	e->err = err;
	e->ts_ns = bpf_ktime_get_ns();
	submit(ctx, e, sizeof(*e));
}

/* connect() (or sendto() with MSG_FASTOPEN, or io_uring) sent the SYN of
 * `sk`, in the connecting task's context: its connect event, if the
 * kernel-side filters want it, and the process introduced.  track_connect()
 * keeps it until the handshake ends (connect_ended).  The tracepoint mode
 * calls this at the SYN_SENT transition, before the local port is chosen;
 * the others when tcp_v4_connect()/tcp_v6_connect() return. */
static __always_inline bool connect_event(void *ctx, struct event *e, const void *sk)
{
	e->type = EVENT_CONNECT;
	set_task(e);
	read_sock(e, sk);
	e->v6only = V6ONLY_UNKNOWN;
	if (!wanted(e))
		return false;
	introduce_process(ctx, e->pid);
	return true;
}

static __always_inline void track_connect(void *ctx, const void *sk)
{
	u64 key = (u64)sk;
	struct event e = {};

	if (connect_event(ctx, &e, sk))
		connects.update(&key, &e);
}

/* The end of a connect's handshake (SYN_SENT -> ESTABLISHED or CLOSE),
 * in softirq context: the process was taken when the SYN went out.  The
 * connect is reported now, in every mode: a `connect` record means a
 * completed handshake, a `connect_failed` one an attempt that ended. */
static __always_inline void connect_ended(void *ctx, const void *sk, bool established)
{
	u64 key = (u64)sk;
	struct event *stored = connects.lookup(&key);
	struct event e;

	if (!stored)
		return;
	e = *stored;   /* a copy: the entry goes now */
	connects.delete(&key);
	read_sock(&e, sk);   /* the tracepoint mode saw the SYN before the local port */
	/* CLOSE has given the local port back (inet_put_port() zeroes
	 * skc_num); inet_sport still holds the one the SYN carried */
	if (!e.sport)
		e.sport = __builtin_bswap16(read_u16(sk, OFF_INET_SPORT));
	if (established) {
		submit(ctx, &e, sizeof(e));
		track_life(sk, &e);
		return;
	}
	report_failed(ctx, &e, read_u32(sk, OFF_SK_ERR));
}

/* A listener cloned `sk` for a new connection (LISTEN -> SYN_RECV, in
 * softirq context, before the child enters the accept queue).  Remember it
 * now, without its addresses, which are set after the clone: accept() may
 * take the child from the queue before its SYN_RECV -> ESTABLISHED
 * transition runs on another CPU, and the entry must already exist for
 * accept() to remove it, or that transition would leave it behind. */
static __always_inline void track_child(const void *sk)
{
	u64 key = (u64)sk, ts = bpf_ktime_get_ns();

	if (pending.update(&key, &ts))
		count(STAT_UNACCEPTED_UNTRACKED);
}

/* The handshake of `sk` completed, in softirq context where the current
 * task is not the owner: record the connection, unless accept() has
 * already taken it. */
static __always_inline void track_unaccepted(const void *sk)
{
	u64 key = (u64)sk;
	struct event e = {};

	if (!pending.lookup(&key))
		return;
	e.type = EVENT_UNACCEPTED;
	e.ts_ns = bpf_ktime_get_ns();
	read_sock(&e, sk);
	e.uid = read_u32(sk, OFF_SK_UID);  /* copied from the listener */
	e.v6only = e.family == AF_INET6 ? sock_ipv6only(sk) : V6ONLY_UNKNOWN;
	if (MAPPED_ONLY && !is_mapped(&e)) {
		pending.delete(&key);
		return;
	}
	/* accept() may delete the keys meanwhile: an entry left here without
	 * its `pending` key is ignored and goes at the socket's CLOSE */
	queued.update(&key, &e);
}

/* `sk` left ESTABLISHED (or was never seen to reach it): a connect still
 * kept in `connects` completed its handshake, but the kernel skipped this
 * program at that transition.  It does so when the program is already
 * running on the CPU (a softirq interrupting it for another socket:
 * bpf_prog_inc_misses_counter() in kernel/trace/bpf_trace.c,
 * __bpf_trace_run, counted in bpf_prog_info.recursion_misses); seen on
 * loopback bursts under emulation, 3 connects in 2,000.  Report it now:
 * its process and time were taken when the SYN went out. */
static __always_inline void handshake_missed(void *ctx, const void *sk)
{
	connect_ended(ctx, sk, true);
}

/* The process holding `sk` closes it (ESTABLISHED -> FIN_WAIT1 or
 * CLOSE_WAIT -> LAST_ACK: only close() or shutdown() by the local side
 * make these, in the caller's context).  A child still pending then was
 * taken by an accept the probes missed: one already blocked when they were
 * attached (the first connection to an idle server, most often short), or
 * io_uring's in the tracepoint mode.  Report it now, from its closer. */
static __always_inline void closing(void *ctx, void *sk)
{
	u64 key = (u64)sk;

	if (pending.lookup(&key))
		report_accept(ctx, sk, 0);
}

/* `sk` reached CLOSE: a child that dies before accept() (a reset from its
 * client, its listener closed) is no longer waiting to be accepted. */
static __always_inline void forget_child(const void *sk)
{
	u64 key = (u64)sk;

	pending.delete(&key);
	queued.delete(&key);
	connects.delete(&key);
}

#ifdef TRACK_LIVES
/* Who ended a connection that reached CLOSE from `oldstate`: an error on
 * the socket (ECONNRESET, EPIPE) is a reset received; a close from
 * ESTABLISHED or CLOSE_WAIT without one is our own reset (abortive close);
 * LAST_ACK follows the peer's FIN, the FIN_WAIT states and CLOSING ours.
 * (A full socket leaves through FIN_WAIT2 -> CLOSE: TIME_WAIT belongs to
 * the timewait socket that replaces it.) */
static __always_inline u8 closed_by(const void *sk, int oldstate)
{
	if (read_u32(sk, OFF_SK_ERR))
		return CLOSED_BY_RESET;
	if (oldstate == STATE_LAST_ACK)
		return CLOSED_BY_PEER;
	if (oldstate == STATE_FIN_WAIT1 || oldstate == STATE_FIN_WAIT2 ||
	    oldstate == STATE_CLOSING || oldstate == STATE_TIME_WAIT)
		return CLOSED_BY_LOCAL;
	return CLOSED_BY_RESET;
}

/* include/net/sock.h, enum sock_flags: set by tcp_fin() when the peer's
 * FIN arrives (and by nothing else before CLOSE) */
#define SOCK_DONE 1

/* The payload a connection carried each way.  tcp_sock's counters follow
 * the sequence numbers (tcp_snd_una_update, tcp_rcv_nxt_update in
 * net/ipv4/tcp_input.c), in which a SYN and a FIN take one each: the
 * connecting side's SYN is counted in bytes_acked (an accepted child
 * begins after it), our FIN once the peer acknowledged it (snd_una
 * reached write_seq, which counts it), the peer's FIN in bytes_received. */
static __always_inline void payload(struct close_event *c, const void *sk, int oldstate)
{
	u64 acked = read_u64(sk, OFF_TCP_BYTES_ACKED);
	u64 received = read_u64(sk, OFF_TCP_BYTES_RECEIVED);
	bool fin_sent = oldstate == STATE_FIN_WAIT1 || oldstate == STATE_FIN_WAIT2 ||
			oldstate == STATE_CLOSING || oldstate == STATE_LAST_ACK;

	if (c->conn.type == EVENT_CONNECT && acked)
		acked--;
	if (fin_sent && acked &&
	    read_u32(sk, OFF_TCP_SND_UNA) == read_u32(sk, OFF_TCP_WRITE_SEQ))
		acked--;
	if ((read_u64(sk, OFF_SKC_FLAGS) & (1ULL << SOCK_DONE)) && received)
		received--;
	c->bytes_acked = acked;
	c->bytes_received = received;
}

#ifdef TRAFFIC
/* Add an ended connection's payload to its process's and peer family's
 * sums (--metrics); a name that finds the map full counts under "". */
static __always_inline void count_traffic(const char *process, const struct close_event *c)
{
	struct traffic_key key = {};
	struct traffic zero = {}, *t;

	__builtin_memcpy(key.process, process, COMM_LEN);
	key.family = is_mapped(&c->conn) ? TRAFFIC_IPV4_MAPPED :
		     c->conn.family == AF_INET6 ? TRAFFIC_IPV6 : TRAFFIC_IPV4;
	t = traffic.lookup_or_try_init(&key, &zero);
	if (!t) {
		__builtin_memset(key.process, 0, COMM_LEN);
		t = traffic.lookup(&key);
		if (!t)
			return;
	}
	__sync_fetch_and_add(&t->bytes_sent, c->bytes_acked);
	__sync_fetch_and_add(&t->bytes_received, c->bytes_received);
}
#endif

/* `sk` reached CLOSE, often in softirq context: if it was reported, what
 * it carried goes to its process's traffic (--metrics) and its close
 * record (--lifetime), both with the process that accepted or connected
 * it (kept in `lives`), not whichever task runs now. */
static __always_inline void life_ended(void *ctx, const void *sk, int oldstate)
{
	u64 key = (u64)sk;
	struct life *l = lives.lookup(&key);
	struct close_event c = {};
	char process[COMM_LEN];
	bool existed_before = false;

#ifdef LIFETIME
	if (!l) {
		key = read_u64(sk, OFF_SKC_COOKIE);
		l = key ? existed.lookup(&key) : 0;
		existed_before = true;
	}
#endif
	if (!l)
		return;
	c.conn = l->conn;   /* copies: the entry goes now */
	__builtin_memcpy(process, l->process, COMM_LEN);
#ifdef LIFETIME
	if (existed_before)
		existed.delete(&key);
	else
#endif
		lives.delete(&key);
	payload(&c, sk, oldstate);
#ifdef TRAFFIC
	if (!existed_before)   /* its bytes count from its accept or connect on */
		count_traffic(process, &c);
#endif
#ifdef LIFETIME
	c.start_ns = c.conn.ts_ns;
	c.opened_by = c.conn.type;
	c.conn.type = EVENT_CLOSE;
	c.conn.ts_ns = bpf_ktime_get_ns();
	c.retransmits = read_u32(sk, OFF_TCP_TOTAL_RETRANS);
	c.closed_by = closed_by(sk, oldstate);
	submit(ctx, &c, sizeof(c));
#endif
}
#endif /* TRACK_LIVES */

/* The raw tracepoint, not sock:inet_sock_set_state: a TCP connection
 * passes about ten state changes and a few of them matter.  The raw one
 * hands over (sk, oldstate, newstate) as they are and the others cost two
 * compares; the classic tracepoint first copies both addresses and ports
 * into a trace record for each of them. */
RAW_TRACEPOINT_PROBE(inet_sock_set_state)
{
	const void *sk = (const void *)ctx->args[0];
	int oldstate = (int)ctx->args[1], newstate = (int)ctx->args[2];

	if (oldstate == STATE_LISTEN && newstate == STATE_SYN_RECV) {
		if (is_tcp(sk))
			track_child(sk);
	} else if (oldstate == STATE_SYN_RECV && newstate == STATE_ESTABLISHED) {
		track_unaccepted(sk);  /* only children track_child saw */
	} else if (oldstate == STATE_SYN_SENT) {
		if (newstate == STATE_ESTABLISHED || newstate == STATE_CLOSE)
			connect_ended(ctx, sk, newstate == STATE_ESTABLISHED);
	} else if (newstate == STATE_CLOSE) {
		if (oldstate != STATE_SYN_RECV)
			handshake_missed(ctx, sk);
		forget_child(sk);   /* and a connect that went SYN_SENT -> SYN_RECV */
#ifdef TRACK_LIVES
		life_ended(ctx, sk, oldstate);
#endif
	} else if (oldstate == STATE_ESTABLISHED && newstate == STATE_CLOSE_WAIT) {
		handshake_missed(ctx, sk);   /* the peer's FIN */
	} else if ((oldstate == STATE_ESTABLISHED && newstate == STATE_FIN_WAIT1) ||
		   (oldstate == STATE_CLOSE_WAIT && newstate == STATE_LAST_ACK)) {
		if (oldstate == STATE_ESTABLISHED)
			handshake_missed(ctx, sk);
		closing(ctx, (void *)sk);
#ifdef PROBE_TRACEPOINT
	} else if (newstate == STATE_SYN_SENT) {
		if (is_tcp(sk))
			track_connect(ctx, sk);
#endif
	}
	return 0;
}

#ifdef PROBE_TRACEPOINT
static __always_inline void accept_returned(void *ctx, long fd)
{
	void *sk;

	if (fd < 0)
		return;
	sk = sock_from_fd(fd);
	if (sk)
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
#endif /* PROBE_TRACEPOINT */

#ifndef PROBE_TRACEPOINT
/* tcp_v4_connect() or tcp_v6_connect() returned `ret` for `sk`.  An
 * AF_INET6 socket with a mapped peer runs tcp_v4_connect() inside
 * tcp_v6_connect(): the outer call reports it, the inner one (AF_INET6
 * socket) is ignored, and nothing is shared between the two. */
static __always_inline void connect_returned(void *ctx, void *sk, int ret, u16 family)
{
	struct event e = {};

	if (sock_family(sk) != family)
		return;
	if (!ret)
		track_connect(ctx, sk);
	else if (connect_event(ctx, &e, sk))   /* before any SYN: no route, no port */
		report_failed(ctx, &e, -ret);
}
#endif

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
	connect_returned(ctx, sk, ret, AF_INET6);
	return 0;
}

KRETFUNC_PROBE(tcp_v4_connect, void *sk, void *uaddr, int addr_len, int ret)
{
	connect_returned(ctx, sk, ret, AF_INET);
	return 0;
}
#endif /* PROBE_KFUNC */

#ifdef PROBE_KPROBE
#include <asm/ptrace.h>  /* struct pt_regs, for PT_REGS_PARM1/PT_REGS_RC */

/* thread -> listener, entry to return (a kretprobe sees only the return
 * value) */
BPF_HASH(accepting, u32, u64, 16384);

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

/* (thread, function) -> connecting socket, entry to return.  The function
 * is part of the key: tcp_v6_connect calls tcp_v4_connect for a mapped
 * peer, and a key of the thread alone would be taken by the inner call. */
struct call_key {
	u32 tid;
	u32 family;   /* AF_INET: tcp_v4_connect, AF_INET6: tcp_v6_connect */
};
BPF_HASH(connecting, struct call_key, u64, 16384);

static __always_inline void connect_entry(struct pt_regs *ctx, u32 family)
{
	struct call_key key = {(u32)bpf_get_current_pid_tgid(), family};
	u64 sk = PT_REGS_PARM1(ctx);

	connecting.update(&key, &sk);
}

static __always_inline void connect_return(struct pt_regs *ctx, u32 family)
{
	struct call_key key = {(u32)bpf_get_current_pid_tgid(), family};
	u64 *sk = connecting.lookup(&key);
	void *s;

	if (!sk)
		return;
	s = (void *)*sk;
	connecting.delete(&key);
	connect_returned(ctx, s, (int)PT_REGS_RC(ctx), family);
}

int kprobe__tcp_v6_connect(struct pt_regs *ctx)
{
	connect_entry(ctx, AF_INET6);
	return 0;
}

int kretprobe__tcp_v6_connect(struct pt_regs *ctx)
{
	connect_return(ctx, AF_INET6);
	return 0;
}

int kprobe__tcp_v4_connect(struct pt_regs *ctx)
{
	connect_entry(ctx, AF_INET);
	return 0;
}

int kretprobe__tcp_v4_connect(struct pt_regs *ctx)
{
	connect_return(ctx, AF_INET);
	return 0;
}
#endif /* PROBE_KPROBE */

#ifdef TRACE_UDP
/* ---------------------------------------------------------------------
 * UDP flows: (socket, peer address, peer port), reported once, at their
 * first datagram in either direction, in the context of the process that
 * sent or received it, and again after UDP_IDLE_NS without a datagram.
 * (Here, not in a header: bcc rewrites map calls in its main file only.)
 *
 * Every probe mode uses the same hooks, none of which needs kprobes or a
 * system call tracepoint:
 *  - cgroup socket-address programs on the cgroup v2 root (Python loads and
 *    links them: kernel/cgroup_bpf.py), which see every datagram sent with
 *    an address (sendto/sendmsg, and any send() of an AF_INET6 socket
 *    connected to a mapped address, which the kernel hands to udp_sendmsg:
 *    net/ipv6/udp.c) and every datagram received by a call that asks for
 *    the sender's address (recvfrom/recvmsg);
 *  - on kernels with the sock_send_length tracepoint (Linux 6.3+:
 *    https://github.com/torvalds/linux/blob/v6.3/include/trace/events/sock.h),
 *    send() on connected sockets, which the cgroup hooks skip.
 * A connect() alone sends nothing: it is no flow (glibc's getaddrinfo
 * connects a UDP socket to each candidate address to sort them).
 */
#ifndef IPPROTO_UDP
#define IPPROTO_UDP 17
#endif
/* a flow's last-seen time is rewritten at most this often, not per datagram */
#define UDP_REFRESH_NS 1000000000ULL

struct udp_flow_key {
	u64 cookie;     /* the socket's cookie: unlike its address, never reused */
	u8  peer[16];   /* as the socket's family holds it: ::ffff:a.b.c.d on AF_INET6 */
	u16 port;       /* the peer's, host order */
	u16 pad[3];
};

/* What a socket's flows go by: its cookie, which exists once anything
 * asked for one (our cgroup programs, a sock_diag dump such as socktrace's
 * snapshot, SO_COOKIE), else its address with its local port in the top
 * 16 bits, which a kernel address never needs: a resolver's next socket
 * (socket, connect, send, close: no cgroup program sees it, so no cookie)
 * often gets the same address, but another port (measured: 21 of 200
 * such sockets in a row shared a key without the port). */
static __always_inline u64 udp_socket_key(const void *sk, u64 cookie)
{
	return cookie ? cookie : (u64)sk ^ ((u64)read_u16(sk, OFF_SKC_NUM) << 48);
}

/* What one hook knows of a datagram's length (udp_datagram's `bytes`) */
#define UDP_COUNTED_LATER (-2)  /* nothing: a sock_*_length tracepoint counts it */
#define UDP_NO_LENGTH     (-1)  /* it is one datagram, of unknown length */

/* The event of a flow of socket `sk` that begins with a datagram to or
 * from `peer`:`port`, in the sending or receiving task's context. */
static __always_inline void udp_event(struct event *e, const void *sk, const u8 *peer,
				      u16 port, u8 type)
{
	e->type = type;
	set_task(e);
	read_sock(e, sk);             /* the local address and port, the netns */
	__builtin_memcpy(e->daddr, peer, sizeof(e->daddr));
	e->dport = port;
	e->v6only = type == EVENT_UDP_IN && e->family == AF_INET6 ? sock_ipv6only(sk)
								   : V6ONLY_UNKNOWN;
	/* the cgroup programs too may read the task and its memory (a root
	 * loader's, bpf_base_func_proto: Linux 5.10+), so report() introduces
	 * the process as for TCP: its name and command line from the kernel */
}

#ifndef LIFETIME
/* flow -> when one of its datagrams was last seen.  LRU: past UDP_FLOWS_MAX
 * flows the least recently seen are forgotten, and reported again when
 * they come back (README, Limits). */
BPF_TABLE("lru_hash", struct udp_flow_key, u64, udp_flows, UDP_FLOWS_MAX);

/* A datagram of socket `sk` (cookie `cookie`), to or from `peer`:`port`:
 * reported when it begins a flow (new, or idle for UDP_IDLE_NS).
 * The hot path: every datagram the hooks see comes here, and almost all
 * of them belong to a flow seen a moment ago. */
static __always_inline void udp_datagram(void *ctx, const void *sk, u64 cookie,
					 const u8 *peer, u16 port, u8 type, s64 bytes)
{
	struct udp_flow_key key = {.cookie = cookie, .port = port};
	u64 now = bpf_ktime_get_ns(), *last;

	__builtin_memcpy(key.peer, peer, sizeof(key.peer));
	last = udp_flows.lookup(&key);
	if (last) {
		u64 seen = *last;   /* read once: another CPU may rewrite it */

		if (now - seen < UDP_IDLE_NS) {
			if (now - seen > UDP_REFRESH_NS)
				udp_flows.update(&key, &now);
			return;
		}
	}
	udp_flows.update(&key, &now);
	{
		struct event e = {};   /* built only for a flow that begins */

		udp_event(&e, sk, peer, port, type);
		report(ctx, &e);
	}
}
#else
/* --lifetime: flow -> its struct udp_flow: its event, when it was last
 * seen, its datagrams and bytes so far.  Its close record is sent when a
 * datagram finds it idle, or by Python's sweep (Probes.take_ended_flows)
 * once it is idle or its socket closed.  LRU as above: a flow forgotten
 * for room has no close record (README, Limits). */
BPF_TABLE("lru_hash", struct udp_flow_key, struct udp_flow, udp_flows, UDP_FLOWS_MAX);
/* a new flow's value is built here: larger than the stack wants */
BPF_PERCPU_ARRAY(udp_scratch, struct udp_flow, 1);
/* cookies of UDP sockets released, and when: the sweep ends their flows */
BPF_TABLE("lru_hash", u64, u64, udp_released, UDP_FLOWS_MAX);

static __always_inline void udp_count(struct udp_flow *f, u8 type, s64 bytes)
{
	if (bytes == UDP_COUNTED_LATER)
		return;
	if (type == EVENT_UDP_OUT) {
		__sync_fetch_and_add(&f->end.datagrams_sent, 1);
		if (bytes > 0)
			__sync_fetch_and_add(&f->end.bytes_acked, bytes);
	} else {
		__sync_fetch_and_add(&f->end.datagrams_received, 1);
		if (bytes > 0)
			__sync_fetch_and_add(&f->end.bytes_received, bytes);
	}
}

/* As without --lifetime, and a flow found idle is ended first: its close
 * record goes now, as its entry is about to begin the new flow. */
static __always_inline void udp_datagram(void *ctx, const void *sk, u64 cookie,
					 const u8 *peer, u16 port, u8 type, s64 bytes)
{
	struct udp_flow_key key = {.cookie = cookie, .port = port};
	u64 now = bpf_ktime_get_ns();
	struct udp_flow *f;
	u32 zero = 0;

	__builtin_memcpy(key.peer, peer, sizeof(key.peer));
	f = udp_flows.lookup(&key);
	if (f) {
		if (now - f->seen < UDP_IDLE_NS) {
			f->seen = now;
			udp_count(f, type, bytes);
			return;
		}
		if (f->end.opened_by) {
			f->end.conn.type = EVENT_CLOSE;
			f->end.conn.ts_ns = f->seen;
			f->end.closed_by = CLOSED_BY_IDLE;
			submit(ctx, &f->end, sizeof(f->end));
		}
	}
	f = udp_scratch.lookup(&zero);
	if (!f)
		return;
	__builtin_memset(f, 0, sizeof(*f));
	udp_event(&f->end.conn, sk, peer, port, type);
	if (report(ctx, &f->end.conn)) {
		f->end.start_ns = f->end.conn.ts_ns;
		f->end.opened_by = type;
#ifdef HAVE_SOCK_LENGTH
		f->end.udp_bytes = 1;
#endif
	}
	f->seen = now;
	udp_count(f, type, bytes);
	udp_flows.update(&key, f);
}

/* The cgroup program of socket release (Linux 5.9+): a UDP socket's
 * flows end with it.  They go by its cookie, or by its address where it
 * had none when they began (udp_socket_key): both keys are noted; the
 * address is ctx itself, which a root loader's program may read as a
 * number.
 * Returns 1: a release cannot be refused anyway. */
int socktrace_udp_release(struct bpf_sock *ctx)
{
	u32 protocol = ctx->protocol;
	u64 cookie, ptr, addr = 0, now;

	if (protocol == IPPROTO_UDP) {
		cookie = bpf_get_socket_cookie(ctx);
		now = bpf_ktime_get_ns();
		udp_released.update(&cookie, &now);
		/* ctx as a number, which the verifier allows arithmetic on (read
		 * back from the stack: a copy of the register stays a pointer) */
		asm volatile("%0 = %1" : "=r"(ptr) : "r"(ctx));
		bpf_probe_read_kernel(&addr, sizeof(addr), &ptr);
		addr = udp_socket_key((const void *)addr, 0);
		udp_released.update(&addr, &now);
	}
	return 1;
}
#endif /* LIFETIME */

#if defined(LIFETIME) && defined(HAVE_SOCK_LENGTH)
/* The flow of the datagram a task's cgroup program saw, until the
 * sock_*_length tracepoint at the end of the same system call counts its
 * length (the programs see the address, not the length; the tracepoints
 * the length, not an unconnected socket's peer). */
BPF_TABLE("lru_hash", u64, struct udp_flow_key, udp_calls, 16384);
#define UDP_HOOK_BYTES UDP_COUNTED_LATER
#else
#define UDP_HOOK_BYTES UDP_NO_LENGTH
#endif

/* A datagram a cgroup program saw */
static __always_inline void udp_hooked(void *ctx, const void *sk, u64 cookie, const u8 *peer,
				       u16 port, u8 type)
{
#if defined(LIFETIME) && defined(HAVE_SOCK_LENGTH)
	struct udp_flow_key key = {.cookie = cookie, .port = port};
	u64 id = bpf_get_current_pid_tgid();

	__builtin_memcpy(key.peer, peer, sizeof(key.peer));
	udp_calls.update(&id, &key);
#endif
	udp_datagram(ctx, sk, cookie, peer, port, type, UDP_HOOK_BYTES);
}

/* The struct sock behind a cgroup program's context, as a number: the
 * kernel's struct bpf_sock_addr_kern begins with it.  ctx->sk itself is a
 * pointer the verifier allows no arithmetic on, so read_sock() could not
 * read its fields at their BTF offsets. */
static __always_inline void *sock_of(struct bpf_sock_addr *ctx)
{
	return (void *)read_u64(ctx, OFF_SOCK_ADDR_SK);
}

/* ::ffff:a.b.c.d from an IPv4 address in network order */
static __always_inline void map_ipv4(u8 *dst, u32 ip4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &ip4, 4);
}

/* The peer of an IPv4 address in a cgroup program (sendmsg4, recvmsg4):
 * on an AF_INET6 socket (a mapped send) in its mapped form. */
static __always_inline void udp_ipv4_peer(struct bpf_sock_addr *ctx, u8 type)
{
	u8 peer[16] = {};
	u32 ip4 = ctx->user_ip4, port = ctx->user_port, family = ctx->family;
	u16 hport;

	/* each field read into a local first: a read of ctx in a branch let
	 * clang form a modified ctx pointer, which the verifier refuses */
	asm volatile("" : "+r"(ip4), "+r"(port), "+r"(family));
	if (family == AF_INET6)
		map_ipv4(peer, ip4);
	else
		__builtin_memcpy(peer, &ip4, 4);
	hport = __builtin_bswap16((u16)port);
	udp_hooked(ctx, sock_of(ctx), bpf_get_socket_cookie(ctx), peer, hport, type);
}

static __always_inline void udp_ipv6_peer(struct bpf_sock_addr *ctx, u8 type)
{
	u32 peer[4];
	u32 port = ctx->user_port;
	u16 hport;

	peer[0] = ctx->user_ip6[0];
	peer[1] = ctx->user_ip6[1];
	peer[2] = ctx->user_ip6[2];
	peer[3] = ctx->user_ip6[3];
	asm volatile("" : "+r"(port));
	hport = __builtin_bswap16((u16)port);
	udp_hooked(ctx, sock_of(ctx), bpf_get_socket_cookie(ctx), (const u8 *)peer, hport, type);
}

/* A send whose address the hook could not see (ancillary data made the
 * kernel run it without one: user_family 0): the socket's own peer. */
static __always_inline void udp_socket_peer(struct bpf_sock_addr *ctx, u8 type)
{
	struct event e = {};
	void *sk = sock_of(ctx);

	read_sock(&e, sk);
	if (e.dport)
		udp_hooked(ctx, sk, bpf_get_socket_cookie(ctx), e.daddr, e.dport, type);
}

static __always_inline bool is_udp_addr(struct bpf_sock_addr *ctx)
{
	u32 protocol = ctx->protocol;

	return protocol == IPPROTO_UDP;
}

/* The cgroup programs: each returns 1, "allowed", always (0 would fail the
 * application's system call); none rewrites an address. */
int socktrace_udp4_sendmsg(struct bpf_sock_addr *ctx)
{
	if (is_udp_addr(ctx)) {
		if (ctx->user_family)
			udp_ipv4_peer(ctx, EVENT_UDP_OUT);
		else
			udp_socket_peer(ctx, EVENT_UDP_OUT);
	}
	return 1;
}

int socktrace_udp6_sendmsg(struct bpf_sock_addr *ctx)
{
	if (is_udp_addr(ctx)) {
		if (ctx->user_family)
			udp_ipv6_peer(ctx, EVENT_UDP_OUT);
		else
			udp_socket_peer(ctx, EVENT_UDP_OUT);
	}
	return 1;
}

int socktrace_udp4_recvmsg(struct bpf_sock_addr *ctx)
{
	if (is_udp_addr(ctx))
		udp_ipv4_peer(ctx, EVENT_UDP_IN);
	return 1;
}

int socktrace_udp6_recvmsg(struct bpf_sock_addr *ctx)
{
	if (is_udp_addr(ctx))
		udp_ipv6_peer(ctx, EVENT_UDP_IN);
	return 1;
}

#ifdef HAVE_SOCK_LENGTH
#ifndef MSG_PEEK
#define MSG_PEEK 2
#endif

/* The peer of a connected UDP socket `sk` into `peer` and `port`, and the
 * key its flows go by (udp_socket_key).  0 when it is not connected. */
static __always_inline u64 udp_connected_peer(const void *sk, u8 *peer, u16 *port)
{
	u16 family;
	u64 cookie;

	if (read_u8(sk, OFF_SKC_STATE) != STATE_ESTABLISHED)
		return 0;
	family = sock_family(sk);
	*port = __builtin_bswap16(read_u16(sk, OFF_SKC_DPORT));
	if (family == AF_INET6)
		bpf_probe_read_kernel(peer, 16, (const char *)sk + OFF_SKC_V6_DADDR);
	else if (family == AF_INET)
		bpf_probe_read_kernel(peer, 4, (const char *)sk + OFF_SKC_DADDR);
	else
		return 0;
	return udp_socket_key(sk, read_u64(sk, OFF_SKC_COOKIE));
}

#ifdef LIFETIME
/* The length of a datagram whose cgroup program ran in this system call
 * (udp_hooked): counted in its flow.  Whether there was one. */
static __always_inline bool udp_hooked_length(const void *sk, int ret, u8 type)
{
	u64 id = bpf_get_current_pid_tgid();
	struct udp_flow_key *key = udp_calls.lookup(&id);
	struct udp_flow_key k;
	struct udp_flow *f;

	if (!key)
		return false;
	k = *key;
	udp_calls.delete(&id);
	if (k.cookie != read_u64(sk, OFF_SKC_COOKIE))
		return false;   /* left by a call on another socket that failed early */
	f = ret > 0 ? udp_flows.lookup(&k) : 0;
	if (f)
		udp_count(f, type, ret);
	return true;
}
#endif

/* send() on a UDP socket sent `ret` bytes.  Every socket's sends pass
 * here, TCP's too, and most UDP ones are unconnected (the cgroup programs
 * saw them): the protocol is read first.  A connected socket's send that
 * no cgroup program saw begins or counts the flow to its own peer. */
static __always_inline void udp_sent(void *ctx, const void *sk, int ret)
{
	u8 peer[16] = {};
	u16 port = 0;
	u64 key;

	if (sock_protocol(sk) != IPPROTO_UDP)
		return;
#ifdef LIFETIME
	if (udp_hooked_length(sk, ret, EVENT_UDP_OUT))
		return;
#endif
	if (ret <= 0)
		return;
	key = udp_connected_peer(sk, peer, &port);
	if (key)
		udp_datagram(ctx, sk, key, peer, port, EVENT_UDP_OUT, ret);
}

RAW_TRACEPOINT_PROBE(sock_send_length)
{
	udp_sent(ctx, (const void *)ctx->args[0], (int)ctx->args[1]);
	return 0;
}

#ifdef LIFETIME
/* recv() on a UDP socket returned `ret` bytes (--lifetime only: every
 * receive of every socket pays for this).  A connected socket's datagram
 * counts in the flow its first send began; it begins none. */
static __always_inline void udp_received(const void *sk, int ret, int flags)
{
	struct udp_flow_key key = {};
	struct udp_flow *f;
	u64 now;

	if (sock_protocol(sk) != IPPROTO_UDP)
		return;
	if (flags & MSG_PEEK)
		ret = 0;   /* the same datagram comes again */
	if (udp_hooked_length(sk, ret, EVENT_UDP_IN) || ret <= 0)
		return;
	key.cookie = udp_connected_peer(sk, key.peer, &key.port);
	f = key.cookie ? udp_flows.lookup(&key) : 0;
	now = bpf_ktime_get_ns();
	if (f && now - f->seen < UDP_IDLE_NS) {
		f->seen = now;
		udp_count(f, EVENT_UDP_IN, ret);
	}
}

RAW_TRACEPOINT_PROBE(sock_recv_length)
{
	udp_received((const void *)ctx->args[0], (int)ctx->args[1], (int)ctx->args[2]);
	return 0;
}
#endif /* LIFETIME */
#endif /* HAVE_SOCK_LENGTH */
#endif /* TRACE_UDP */
