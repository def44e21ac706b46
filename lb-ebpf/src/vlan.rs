//! 802.1Q/802.1ad tags of what we send to a client: a reply (or an ICMP error) leaves with
//! the tag the client's frames came with, whatever tag the backend's frame had: rewritten,
//! pushed or popped. The last step before the verdict: pushing or popping moves the start
//! of the frame, after which no header pointer of the parser is valid.

use lb_common::{Reason, VLAN_8021AD, VLAN_TAGGED};
use network_types::{eth::EthHdr, vlan::VlanHdr};

use crate::{Verdict, ctx::Ctx, family::Family, packet::Headers};

const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// Destination and source MAC: what moves when a tag is pushed or popped.
const MACS_LEN: usize = 12;
const TAG_LEN: usize = VlanHdr::LEN;

#[inline(always)]
fn tpid(tag: u32) -> u16 {
    if tag & VLAN_8021AD != 0 {
        ETH_P_8021AD
    } else {
        ETH_P_8021Q
    }
}

/// Gives the frame (parsed as `h`, addresses already rewritten) the client's tag `want`.
#[inline(always)]
pub fn restore<C: Ctx, A: Family>(ctx: &C, h: &Headers<A>, want: u32) -> Result<(), Verdict> {
    let have = h.vlan;
    if have == want {
        return Ok(());
    }
    if have & VLAN_TAGGED != 0 && want & VLAN_TAGGED != 0 {
        // SAFETY: both headers were checked by the parser.
        unsafe {
            (*h.eth).ether_type = tpid(want).to_be();
            (*h.vlan_hdr).tci = (want as u16).to_be_bytes();
        }
        return Ok(());
    }
    if want & VLAN_TAGGED != 0 {
        // Push: four bytes in front, the MACs moved there, the tag after them; the frame's
        // EtherType is then where a tag's inner type belongs.
        if !ctx.adjust_head(-(TAG_LEN as i32)) {
            return Err(Verdict::drop(Reason::DropInternal));
        }
        let (data, end) = (ctx.data(), ctx.data_end());
        if data + EthHdr::LEN + TAG_LEN > end {
            return Err(Verdict::drop(Reason::DropInternal));
        }
        let p = data as *mut u8;
        // SAFETY: the first 18 bytes are within the frame (checked above).
        unsafe {
            let macs: [u8; MACS_LEN] = core::ptr::read_unaligned(p.add(TAG_LEN).cast());
            core::ptr::write_unaligned(p.cast(), macs);
            core::ptr::write_unaligned(p.add(MACS_LEN).cast(), tpid(want).to_be_bytes());
            core::ptr::write_unaligned(p.add(MACS_LEN + 2).cast(), (want as u16).to_be_bytes());
        }
        return Ok(());
    }
    // Pop: the MACs moved over the tag, then the start of the frame after them.
    let p = h.eth as *mut u8;
    // SAFETY: Ethernet and tag headers were checked by the parser.
    unsafe {
        let macs: [u8; MACS_LEN] = core::ptr::read_unaligned(p.cast());
        core::ptr::write_unaligned(p.add(TAG_LEN).cast(), macs);
    }
    if !ctx.adjust_head(TAG_LEN as i32) {
        return Err(Verdict::drop(Reason::DropInternal));
    }
    Ok(())
}
