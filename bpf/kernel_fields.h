/* SPDX-License-Identifier: MIT
 *
 * kernel_fields.h - every kernel struct field socktrace reads: the one list.
 *
 *   KERNEL_FIELD(NAME, struct, field path)      read at offset OFF_NAME
 *   KERNEL_INT_FIELD(NAME, struct, field path)  an integer of any width, a
 *       bit-field too, read as (u32 at OFF_NAME >> NAME_SHIFT) & NAME_MASK
 *
 * Both ways of knowing the kernel's layout read this list:
 *  - from BTF (the default): socktrace/probes.py reads this file, looks each
 *    path up in the running kernel's BTF and passes -DOFF_NAME=... (and
 *    NAME_SHIFT, NAME_MASK);
 *  - from the kernel's headers (only without usable BTF): kernel_read.h
 *    turns each KERNEL_FIELD into offsetof(); the two KERNEL_INT_FIELDs,
 *    which offsetof() cannot name, are spelled out there.
 * No include guard: it is included once per meaning of the two macros.
 */
KERNEL_FIELD(SKC_FAMILY,        sock, __sk_common.skc_family)
KERNEL_FIELD(SKC_NUM,           sock, __sk_common.skc_num)
KERNEL_FIELD(SKC_DPORT,         sock, __sk_common.skc_dport)
KERNEL_FIELD(SKC_DADDR,         sock, __sk_common.skc_daddr)
KERNEL_FIELD(SKC_RCV_SADDR,     sock, __sk_common.skc_rcv_saddr)
KERNEL_FIELD(SKC_V6_DADDR,      sock, __sk_common.skc_v6_daddr)
KERNEL_FIELD(SKC_V6_RCV_SADDR,  sock, __sk_common.skc_v6_rcv_saddr)
KERNEL_FIELD(SKC_NET,           sock, __sk_common.skc_net)
KERNEL_FIELD(SKC_STATE,         sock, __sk_common.skc_state)
KERNEL_FIELD(SKC_COOKIE,        sock, __sk_common.skc_cookie)
KERNEL_FIELD(SK_UID,            sock, sk_uid)
KERNEL_FIELD(SK_ERR,            sock, sk_err)
KERNEL_FIELD(INET_SPORT,        inet_sock, inet_sport)
KERNEL_FIELD(NET_INUM,          net, ns.inum)
KERNEL_FIELD(TASK_FILES,        task_struct, files)
KERNEL_FIELD(TASK_MM,           task_struct, mm)
KERNEL_FIELD(TASK_GROUP_LEADER, task_struct, group_leader)
KERNEL_FIELD(TASK_COMM,         task_struct, comm)
KERNEL_FIELD(FILES_FDT,         files_struct, fdt)
KERNEL_FIELD(FDT_MAX_FDS,       fdtable, max_fds)
KERNEL_FIELD(FDT_FD,            fdtable, fd)
KERNEL_FIELD(FILE_PRIVATE,      file, private_data)
KERNEL_FIELD(SOCKET_SK,         socket, sk)
KERNEL_FIELD(MM_ARG_START,      mm_struct, arg_start)
KERNEL_FIELD(MM_ARG_END,        mm_struct, arg_end)
KERNEL_FIELD(SOCK_ADDR_SK,      bpf_sock_addr_kern, sk)
KERNEL_FIELD(TCP_BYTES_ACKED,   tcp_sock, bytes_acked)
KERNEL_FIELD(TCP_BYTES_RECEIVED, tcp_sock, bytes_received)
KERNEL_FIELD(TCP_TOTAL_RETRANS, tcp_sock, total_retrans)
KERNEL_FIELD(TCP_SND_UNA,       tcp_sock, snd_una)
KERNEL_FIELD(TCP_WRITE_SEQ,     tcp_sock, write_seq)
KERNEL_FIELD(SKC_FLAGS,         sock, __sk_common.skc_flags)
KERNEL_INT_FIELD(SKC_IPV6ONLY,  sock, __sk_common.skc_ipv6only)
KERNEL_INT_FIELD(SK_PROTOCOL,   sock, sk_protocol)
