//! The kernel half of Portcullis: cgroup programs that send every TCP connect aimed at
//! a protected target to the Portcullis proxy, and tell the proxy who asked and where
//! they meant to go.
//!
//! - `connect4`/`connect6` rewrite the destination of a connect to a protected target
//!   into the proxy listener and remember `{original destination, pid, uid, gid, comm}`
//!   under the socket cookie (IPv4-mapped addresses on IPv6 sockets included). Connects
//!   from another network namespace, and the proxy's own upstream sockets (SO_MARK),
//!   pass untouched.
//! - `sockops` copies that record, when the connection is established, under the
//!   client's address and port: the key the proxy can look up from an accepted socket.
//! - `getpeername4`/`getpeername6` make the client see the peer it asked for.
//!
//! All maps are pinned by name: a daemon that dies leaves the redirect in place (to a
//! listener that is gone, so connects fail closed) and a restarted daemon adopts them.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, bpf_sock_addr},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    },
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{Array, HashMap, LruHashMap},
    programs::{SockAddrContext, SockOpsContext},
};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use portcullis_common::{
    Endpoint, MAX_TARGETS, MAX_TRACKED_SOCKETS, Origin, ProxyConfig, V4_MAPPED_WORD,
};

/// Let the connect (or getpeername) proceed; we only ever rewrite, never refuse.
const PROCEED: i32 = 1;
const AF_INET: u32 = 2;
const IPPROTO_TCP: u32 = 6;

/// Protected targets: destination → target index (set by the daemon).
#[map(name = "PORTCULLIS_TARGETS")]
static TARGETS: HashMap<Endpoint, u32> = HashMap::pinned(MAX_TARGETS, 0);

/// The proxy's listeners, mark and network namespace (index 0).
#[map(name = "PORTCULLIS_CONFIG")]
static CONFIG: Array<ProxyConfig> = Array::pinned(1, 0);

/// Socket cookie → origin of a redirected connect (for sockops and getpeername).
#[map(name = "PORTCULLIS_SOCKETS")]
static SOCKETS: LruHashMap<u64, Origin> = LruHashMap::pinned(MAX_TRACKED_SOCKETS, 0);

/// Client endpoint → origin, for the proxy to look up after accept().
#[map(name = "PORTCULLIS_CONNECTIONS")]
static CONNECTIONS: LruHashMap<Endpoint, Origin> = LruHashMap::pinned(MAX_TRACKED_SOCKETS, 0);

#[cgroup_sock_addr(connect4)]
pub fn portcullis_connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands a valid bpf_sock_addr for the program's lifetime.
    let (ip, port) = unsafe { ((*sa).user_ip4, (*sa).user_port) };
    let dst = Endpoint::v4(ip, u16::from_be(port as u16));
    if let Some(cfg) = redirect_config(&ctx, &dst) {
        // SAFETY: user_ip4 and user_port are writable in connect4; separate volatile
        // stores keep LLVM from merging them into one 8-byte store the verifier rejects.
        unsafe {
            write_volatile(addr_of_mut!((*sa).user_ip4), cfg.listen4);
            write_volatile(addr_of_mut!((*sa).user_port), u32::from(cfg.port4.to_be()));
        }
    }
    PROCEED
}

#[cgroup_sock_addr(connect6)]
pub fn portcullis_connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: as in connect4.
    let (ip, port) = unsafe { ((*sa).user_ip6, (*sa).user_port) };
    let dst = Endpoint::v6(ip, u16::from_be(port as u16));
    if let Some(cfg) = redirect_config(&ctx, &dst) {
        let (addr, port) = if dst.is_v4_mapped() {
            ([0, 0, V4_MAPPED_WORD, cfg.listen4], cfg.port4)
        } else {
            (cfg.listen6, cfg.port6)
        };
        write_ip6(sa, addr, port);
    }
    PROCEED
}

#[sock_ops]
pub fn portcullis_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 0;
    }
    // SAFETY: bpf_get_socket_cookie accepts a sock_ops context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(origin) = SOCKETS.get_ptr(&cookie) else {
        return 0;
    };
    // local_port is host order in sock_ops; the addresses are raw network order.
    let port = ctx.local_port() as u16;
    let client = if ctx.family() == AF_INET {
        Endpoint::v4(ctx.local_ip4(), port)
    } else {
        Endpoint::v6(local_ip6(&ctx), port)
    };
    // SAFETY: the pointer came from a successful lookup in this program run.
    let origin = unsafe { *origin };
    let _ = CONNECTIONS.insert(&client, &origin, 0);
    0
}

#[cgroup_sock_addr(getpeername4)]
pub fn portcullis_getpeername4(ctx: SockAddrContext) -> i32 {
    if let Some(origin) = origin_of(&ctx) {
        let sa = ctx.sock_addr;
        // SAFETY: user_ip4/user_port are writable in getpeername4.
        unsafe {
            write_volatile(addr_of_mut!((*sa).user_ip4), origin.dst.addr[3]);
            write_volatile(
                addr_of_mut!((*sa).user_port),
                u32::from(origin.dst.port.to_be()),
            );
        }
    }
    PROCEED
}

#[cgroup_sock_addr(getpeername6)]
pub fn portcullis_getpeername6(ctx: SockAddrContext) -> i32 {
    if let Some(origin) = origin_of(&ctx) {
        write_ip6(ctx.sock_addr, origin.dst.addr, origin.dst.port);
    }
    PROCEED
}

/// The proxy config if this connect must be redirected, after remembering its origin.
fn redirect_config(ctx: &SockAddrContext, dst: &Endpoint) -> Option<ProxyConfig> {
    let sa = ctx.sock_addr;
    // SAFETY: protocol is readable in every sock_addr program.
    if unsafe { (*sa).protocol } != IPPROTO_TCP {
        return None;
    }
    // SAFETY: the lookup result is copied out at once.
    let cfg = unsafe { *CONFIG.get_ptr(0)? };
    if cfg.port4 == 0 {
        return None;
    }
    // SAFETY: bpf_get_netns_cookie accepts a sock_addr context.
    if unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } != cfg.netns_cookie {
        return None;
    }
    // SAFETY: ctx->sk is a valid bpf_sock in connect programs; `mark` is readable.
    let mark = unsafe { (*(*sa).__bindgen_anon_1.sk).mark };
    if cfg.mark != 0 && mark == cfg.mark {
        return None;
    }
    TARGETS.get_ptr(dst)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let origin = Origin {
        dst: *dst,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // SAFETY: bpf_get_socket_cookie accepts a sock_addr context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // If we cannot remember who asked, the proxy will refuse the connection (it
    // cannot attribute it): still redirect, so nothing reaches the target ungated.
    let _ = SOCKETS.insert(&cookie, &origin, 0);
    Some(cfg)
}

/// The origin recorded for this socket by connect4/6, if it was redirected.
fn origin_of(ctx: &SockAddrContext) -> Option<Origin> {
    // SAFETY: bpf_get_socket_cookie accepts a sock_addr context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: copied out at once.
    SOCKETS.get_ptr(&cookie).map(|p| unsafe { *p })
}

/// Reads `local_ip6` one word at a time at fixed context offsets: the verifier
/// refuses a copy through a context pointer moved to the array's start.
fn local_ip6(ctx: &SockOpsContext) -> [u32; 4] {
    let ops = ctx.ops;
    // SAFETY: local_ip6 is readable in sock_ops programs.
    unsafe {
        [
            read_volatile(addr_of!((*ops).local_ip6[0])),
            read_volatile(addr_of!((*ops).local_ip6[1])),
            read_volatile(addr_of!((*ops).local_ip6[2])),
            read_volatile(addr_of!((*ops).local_ip6[3])),
        ]
    }
}

/// Writes an IPv6 address and port, one 4-byte store at a time (see connect4).
fn write_ip6(sa: *mut bpf_sock_addr, addr: [u32; 4], port: u16) {
    // SAFETY: user_ip6 and user_port are writable in connect6/getpeername6.
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip6[0]), addr[0]);
        write_volatile(addr_of_mut!((*sa).user_ip6[1]), addr[1]);
        write_volatile(addr_of_mut!((*sa).user_ip6[2]), addr[2]);
        write_volatile(addr_of_mut!((*sa).user_ip6[3]), addr[3]);
        write_volatile(addr_of_mut!((*sa).user_port), u32::from(port.to_be()));
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
