//! Socket-level balancing for processes on this node: cgroup `connect4` and `connect6`
//! hooks turn a `connect()` to VIP:port into a `connect()` to a backend picked from the same
//! Maglev table the XDP program uses (the VIP's family's: `VIPS`/`BACKENDS` or `VIPS6`/
//! `BACKENDS6`). Only sockets in the daemon's network namespace are touched: the hook
//! sits on the root cgroup, which every namespace on the machine shares.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_netns_cookie, bpf_get_prandom_u32},
    macros::{cgroup_sock_addr, map},
    maps::{Array, PerCpuArray},
    programs::SockAddrContext,
};
use lb_common::{IPPROTO_TCP, IPPROTO_UDP, VipKey};

use crate::{family::Family, lookup};

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
/// `SOCK_COUNTS` index: connects redirected to a backend.
pub const SOCK_BALANCED: u32 = 0;
/// `SOCK_COUNTS` index: connects to a VIP left alone because no backend was available.
pub const SOCK_NO_BACKEND: u32 = 1;

/// 0 -> network-namespace cookie of the daemon (0: hook off). Written by the daemon.
#[map]
static SOCK_CONFIG: Array<u64> = Array::with_max_entries(1, 0);

/// Per CPU: `SOCK_*` -> connects. Written here, read by the daemon.
#[map]
static SOCK_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Always allows the connect (returns 1); only its destination may change.
#[cgroup_sock_addr(connect4)]
pub fn xvip_connect4(ctx: SockAddrContext) -> i32 {
    balance(&ctx);
    1
}

/// Always allows the connect (returns 1); only its destination may change.
#[cgroup_sock_addr(connect6)]
pub fn xvip_connect6(ctx: SockAddrContext) -> i32 {
    balance6(&ctx);
    1
}

/// The VIP key of a connect from this namespace's sockets (TCP or UDP), or `None`.
#[inline(always)]
fn vip_key<A: Family>(ctx: &SockAddrContext, addr: A) -> Option<VipKey<A>> {
    let cookie = SOCK_CONFIG.get(0).copied().unwrap_or(0);
    // SAFETY: helper on the program's own context.
    if cookie == 0 || unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } != cookie {
        return None;
    }
    let sa = ctx.sock_addr;
    // SAFETY: the context is valid for the program's duration; these fields are readable.
    let (port, ty) = unsafe { ((*sa).user_port, (*sa).type_) };
    let proto = match ty {
        SOCK_STREAM => IPPROTO_TCP,
        SOCK_DGRAM => IPPROTO_UDP,
        _ => return None,
    };
    // `user_port` holds the port in network byte order in its low 16 bits.
    Some(VipKey {
        addr,
        port: port as u16,
        proto,
        _pad: 0,
    })
}

/// The backend (address, port) for a connect to VIP `key`, counted; `None` when `key` is
/// no VIP or it has no backend.
#[inline(always)]
fn backend_for<A: Family>(key: &VipKey<A>) -> Option<(A, u16)> {
    // SAFETY: plain value copied out of the map.
    let meta = (unsafe { A::vips().get(key) }).copied()?;
    // No source port exists yet to hash: a random slot spreads connects like the table does.
    // SAFETY: helper without arguments.
    let hash = unsafe { bpf_get_prandom_u32() };
    match lookup::pick_backend(&meta, hash) {
        Ok((_, backend)) => {
            count(SOCK_BALANCED);
            Some((backend.addr, backend.port))
        }
        Err(_) => {
            count(SOCK_NO_BACKEND);
            None
        }
    }
}

#[inline(always)]
fn balance(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    // SAFETY: readable in connect4 programs.
    let addr = unsafe { (*sa).user_ip4 };
    if let Some(key) = vip_key(ctx, addr)
        && let Some((addr, port)) = backend_for(&key)
    {
        // SAFETY: these fields are writable in connect4 programs.
        unsafe {
            (*sa).user_ip4 = addr;
            (*sa).user_port = port as u32;
        }
    }
}

#[inline(always)]
fn balance6(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    // SAFETY: readable in connect6 programs (four words, each in network byte order as
    // `Ip6` keeps them). Word by word: the verifier takes only context loads at a constant
    // offset from the context itself, not through a pointer into it.
    let addr = unsafe {
        [
            (*sa).user_ip6[0],
            (*sa).user_ip6[1],
            (*sa).user_ip6[2],
            (*sa).user_ip6[3],
        ]
    };
    if let Some(key) = vip_key(ctx, addr)
        && let Some((addr, port)) = backend_for(&key)
    {
        // SAFETY: these fields are writable in connect6 programs (word by word, as above).
        unsafe {
            (*sa).user_ip6[0] = addr[0];
            (*sa).user_ip6[1] = addr[1];
            (*sa).user_ip6[2] = addr[2];
            (*sa).user_ip6[3] = addr[3];
            (*sa).user_port = port as u32;
        }
    }
}

#[inline(always)]
fn count(i: u32) {
    if let Some(c) = SOCK_COUNTS.get_ptr_mut(i) {
        // SAFETY: per-CPU slot.
        unsafe { *c += 1 };
    }
}
