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

/// The `VIP_FILTER` bit of an address (raw, as on the wire).
#[inline(always)]
pub const fn filter_bit(addr: u32) -> u32 {
    mix32(addr ^ 0x5bd1_e995) & (crate::VIP_FILTER_BITS - 1)
}

/// The `VIP_FILTER` words with the bits of `addrs` set.
pub fn filter_words(
    addrs: impl IntoIterator<Item = u32>,
) -> [u64; crate::VIP_FILTER_WORDS as usize] {
    let mut w = [0u64; crate::VIP_FILTER_WORDS as usize];
    for a in addrs {
        let b = filter_bit(a);
        w[(b >> 6) as usize] |= 1 << (b & 63);
    }
    w
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_has_the_bits_of_its_addresses_and_few_others() {
        let addrs = [0u32, 0x6400_02c0, 0x0200_02c0];
        let w = filter_words(addrs);
        for a in addrs {
            let b = filter_bit(a);
            assert_ne!(w[(b >> 6) as usize] & (1 << (b & 63)), 0);
        }
        let set: u32 = w.iter().map(|x| x.count_ones()).sum();
        assert!(set <= 3);
        let hits = (0..100_000u32).filter(|a| {
            let b = filter_bit(a.wrapping_mul(2_654_435_761));
            w[(b >> 6) as usize] & (1 << (b & 63)) != 0
        });
        assert!(hits.count() < 100, "false positives should be ~3 in 65536");
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
    fn flow_hash_spreads_source_ports_over_a_small_table() {
        let mut seen = [0u32; 7];
        for p in 0..7000u16 {
            seen[(flow_hash(1, 2, p, 6443, 6) % 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
