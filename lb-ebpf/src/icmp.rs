//! ICMP: echo requests to a VIP are answered here; anything else is the kernel's.

use aya_ebpf::programs::XdpContext;
use lb_common::{ADDR_FLAG_VIP, CONFIG_FLAG_ICMP_ECHO, Reason, checksum::update_u16};
use network_types::icmp::Icmpv4Hdr;

use crate::{
    Verdict,
    maps::CONFIG,
    packet::{Frame, Headers},
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// TTL of the echo replies we originate.
const REPLY_TTL: u8 = 64;

#[inline(always)]
pub fn handle(_ctx: &XdpContext, _frame: &Frame, h: &Headers) -> Verdict {
    if h.dst_flags & ADDR_FLAG_VIP == 0 {
        return Verdict::pass(Reason::PassNotForVip);
    }
    let echo = CONFIG
        .get(0)
        .is_some_and(|c| c.flags & CONFIG_FLAG_ICMP_ECHO != 0);
    let (eth, ip, icmp) = (h.eth, h.ip, h.l4 as *mut Icmpv4Hdr);
    // SAFETY: all three checked by the parser.
    unsafe {
        if !echo || (*icmp).type_ != ICMP_ECHO_REQUEST || (*icmp).code != 0 {
            return Verdict::pass(Reason::PassNotForVip);
        }
        let mac = (*eth).dst_addr;
        (*eth).dst_addr = (*eth).src_addr;
        (*eth).src_addr = mac;

        // Swapping the addresses leaves the header checksum unchanged; the TTL does not.
        let (src, dst) = ((*ip).src_addr, (*ip).dst_addr);
        (*ip).src_addr = dst;
        (*ip).dst_addr = src;
        let old = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
        (*ip).ttl = REPLY_TTL;
        let new = u16::from_be_bytes([(*ip).ttl, (*ip).proto]);
        (*ip).check = update_u16(u16::from_be_bytes((*ip).check), old, new).to_be_bytes();

        let old = u16::from_be_bytes([(*icmp).type_, (*icmp).code]);
        (*icmp).type_ = ICMP_ECHO_REPLY;
        let new = u16::from_be_bytes([(*icmp).type_, (*icmp).code]);
        (*icmp).check = update_u16(u16::from_be_bytes((*icmp).check), old, new).to_be_bytes();
    }
    Verdict::tx(Reason::IcmpEchoReply)
}
