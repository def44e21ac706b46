//! The flow hash that picks a Maglev slot. Pure so that tests, the daemon and every xvip
//! node compute the same value for the same flow.

/// Mixes a 32-bit value (the murmur3 finaliser).
#[inline(always)]
pub const fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The `VIP_SLOTS` slot of an address (raw, as on the wire).
#[inline(always)]
pub const fn addr_slot(addr: u32) -> u32 {
    mix32(addr ^ 0x5bd1_e995) & (crate::VIP_SLOTS - 1)
}

/// The `VIP_SLOTS` contents for `VIP_ADDRS` entries `(address, flags)`: a slot holds its
/// one address and flags, or `ADDR_SLOT_OVERFLOW` when several addresses share it.
pub fn addr_slots(
    entries: impl IntoIterator<Item = (u32, u32)>,
) -> [u64; crate::VIP_SLOTS as usize] {
    let mut slots = [0u64; crate::VIP_SLOTS as usize];
    for (addr, flags) in entries {
        let s = &mut slots[addr_slot(addr) as usize];
        *s = if *s == 0 {
            (u64::from(addr) << 32) | u64::from(flags)
        } else {
            u64::from(crate::ADDR_SLOT_OVERFLOW)
        };
    }
    slots
}

/// The `VIP_SLOTS6` slot of an IPv6 address (raw, as on the wire): every word mixed in.
#[inline(always)]
pub fn addr_slot6(addr: crate::Ip6) -> u32 {
    crate::Addr::mix_into(addr, 0x5bd1_e995) & (crate::VIP_SLOTS6 - 1)
}

/// The `VIP_SLOTS6` contents for `VIP_ADDRS6` entries `(address, flags)`, as
/// [`addr_slots`] for IPv4.
pub fn addr_slots6(
    entries: impl IntoIterator<Item = (crate::Ip6, u32)>,
) -> [crate::AddrSlot6; crate::VIP_SLOTS6 as usize] {
    let mut slots = [crate::AddrSlot6::default(); crate::VIP_SLOTS6 as usize];
    for (addr, flags) in entries {
        let s = &mut slots[addr_slot6(addr) as usize];
        *s = if s.flags == 0 {
            crate::AddrSlot6 { addr, flags }
        } else {
            crate::AddrSlot6 {
                addr: [0; 4],
                flags: crate::ADDR_SLOT_OVERFLOW,
            }
        };
    }
    slots
}

/// Hash of a flow's 5-tuple, fields raw as on the wire (see [`crate::FlowKey`]).
#[inline(always)]
pub const fn flow_hash(
    src_addr: u32,
    dst_addr: u32,
    src_port: u16,
    dst_port: u16,
    proto: u8,
) -> u32 {
    let mut h = mix32(src_addr ^ 0x9e37_79b9);
    h = mix32(h ^ dst_addr);
    h = mix32(h ^ ((src_port as u32) << 16 | dst_port as u32));
    mix32(h ^ proto as u32)
}

/// Hash of a flow's 5-tuple for either address family ([`crate::Addr`]). For IPv4 it is
/// exactly [`flow_hash`]; an IPv6 address folds in its four words in turn.
#[inline(always)]
pub fn flow_hash_of<A: crate::Addr>(
    src: A,
    dst: A,
    src_port: u16,
    dst_port: u16,
    proto: u8,
) -> u32 {
    let mut h = dst.mix_into(src.mix_into(0x9e37_79b9));
    h = mix32(h ^ ((src_port as u32) << 16 | dst_port as u32));
    mix32(h ^ proto as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_holds_its_address_or_overflows() {
        let slots = addr_slots([(0x6400_02c0, 1), (0x0200_02c0, 2)]);
        for (a, f) in [(0x6400_02c0u32, 1u64), (0x0200_02c0, 2)] {
            let v = slots[addr_slot(a) as usize];
            assert!(v == (u64::from(a) << 32 | f) || v == u64::from(crate::ADDR_SLOT_OVERFLOW));
        }
        assert_eq!(slots.iter().filter(|v| **v != 0).count(), 2);
        // Two addresses in one slot: that slot says "ask VIP_ADDRS".
        let a = 7u32;
        let b = (1..u32::MAX)
            .find(|b| addr_slot(*b) == addr_slot(a))
            .unwrap();
        let slots = addr_slots([(a, 1), (b, 2)]);
        assert_eq!(
            slots[addr_slot(a) as usize],
            u64::from(crate::ADDR_SLOT_OVERFLOW)
        );
    }

    #[test]
    fn an_ipv6_slot_holds_its_address_or_overflows() {
        let (vip, snat) = (
            [0x0db8_0120, 0, 0, 0x6400_0000],
            [0x0db8_0120, 0, 0, 0x0200_0000],
        );
        let slots = addr_slots6([(vip, 1), (snat, 2), ([0; 4], 1)]);
        for (a, f) in [(vip, 1), (snat, 2), ([0; 4], 1)] {
            let s = slots[addr_slot6(a) as usize];
            assert!(
                s == crate::AddrSlot6 { addr: a, flags: f } || s.flags == crate::ADDR_SLOT_OVERFLOW
            );
        }
        // Each word of the address moves the slot for some value of it.
        for w in 0..4 {
            let moved = (1..64u32).any(|x| {
                let mut b = vip;
                b[w] ^= x;
                addr_slot6(b) != addr_slot6(vip)
            });
            assert!(moved, "word {w} is hashed");
        }
        let b = (1..u32::MAX)
            .map(|x| [0x0db8_0120, 0, 0, x])
            .find(|b| *b != vip && addr_slot6(*b) == addr_slot6(vip))
            .unwrap();
        let slots = addr_slots6([(vip, 1), (b, 2)]);
        assert_eq!(
            slots[addr_slot6(vip) as usize].flags,
            crate::ADDR_SLOT_OVERFLOW
        );
    }

    #[test]
    fn flow_hash_changes_with_every_field() {
        let base = flow_hash(1, 2, 3, 4, 6);
        assert_ne!(base, flow_hash(9, 2, 3, 4, 6));
        assert_ne!(base, flow_hash(1, 9, 3, 4, 6));
        assert_ne!(base, flow_hash(1, 2, 9, 4, 6));
        assert_ne!(base, flow_hash(1, 2, 3, 9, 6));
        assert_ne!(base, flow_hash(1, 2, 3, 4, 17));
    }

    #[test]
    fn the_generic_hash_is_the_ipv4_hash_and_sees_every_ipv6_word() {
        for (s, d, sp, dp) in [
            (1u32, 2u32, 3u16, 4u16),
            (0xc000_0201, 0x6400_02c0, 40000, 6443),
        ] {
            assert_eq!(flow_hash_of(s, d, sp, dp, 6), flow_hash(s, d, sp, dp, 6));
        }
        let base = flow_hash_of([1u32, 2, 3, 4], [5, 6, 7, 8], 9, 10, 6);
        for w in 0..4 {
            let mut s = [1u32, 2, 3, 4];
            s[w] ^= 1 << 20;
            assert_ne!(base, flow_hash_of(s, [5, 6, 7, 8], 9, 10, 6));
            let mut d = [5u32, 6, 7, 8];
            d[w] ^= 1;
            assert_ne!(base, flow_hash_of([1, 2, 3, 4], d, 9, 10, 6));
        }
    }

    #[test]
    fn flow_hash_spreads_source_ports_over_a_small_table() {
        let mut seen = [0u32; 7];
        for p in 0..7000u16 {
            seen[(flow_hash(1, 2, p, 6443, 6) % 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
