//! Internet checksum arithmetic (RFC 1071, incremental update per RFC 1624). Pure functions on
//! big-endian numeric values, shared by the XDP program and the tests.

/// Folds a 32-bit one's-complement accumulator into 16 bits (not inverted).
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Checksum field after one 16-bit word of the covered data changed from `old` to `new`
/// (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline(always)]
pub const fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check as u32) + (!old as u32 & 0xffff) + new as u32;
    !fold(sum)
}

/// Checksum field after a 32-bit value (an address) of the covered data changed.
#[inline(always)]
pub const fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    let sum =
        (!check as u32) + (!(old >> 16) & 0xffff) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
    !fold(sum)
}

/// Checksum field after a 128-bit value (an IPv6 address; raw words, network byte order
/// in memory as in [`crate::Ip6`]) changed: RFC 1624 eqn. 3 over its eight 16-bit words,
/// summed once and folded once.
#[inline(always)]
pub fn update_ip6(check: u16, old: [u32; 4], new: [u32; 4]) -> u16 {
    let mut sum = !check as u32;
    let mut i = 0;
    while i < 4 {
        let (o, n) = (u32::from_be(old[i]), u32::from_be(new[i]));
        // At most 1 + 16 words of 0xffff: no overflow of the 32-bit accumulator.
        sum += (!(o >> 16) & 0xffff) + (!o & 0xffff) + (n >> 16) + (n & 0xffff);
        i += 1;
    }
    !fold(sum)
}

/// UDP variant of an update: a zero checksum means "none" and stays zero, and a result of
/// zero is sent as 0xffff (RFC 768).
#[inline(always)]
pub const fn udp_fixup(orig: u16, updated: u16) -> u16 {
    if orig == 0 {
        0
    } else if updated == 0 {
        0xffff
    } else {
        updated
    }
}

/// Adds `data` (big-endian 16-bit words, an odd last byte padded with zero) to `sum`.
pub fn accumulate(mut sum: u32, data: &[u8]) -> u32 {
    let (words, rest) = data.as_chunks::<2>();
    for w in words {
        sum += u16::from_be_bytes(*w) as u32;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [b] = rest {
        sum += (*b as u32) << 8;
    }
    sum
}

/// Full Internet checksum of `data`, ready to store (inverted).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(accumulate(0, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    // An IPv4 header (checksum 0xb861 at bytes 10..12) from RFC 1071's usual example set.
    const IPV4: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn full_checksum_of_a_known_header_verifies_to_zero() {
        assert_eq!(checksum(&IPV4), 0);
        let mut h = IPV4;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn incremental_address_update_matches_recomputation() {
        let mut h = IPV4;
        let old = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
        let new = u32::from_be_bytes([203, 0, 113, 77]);
        h[16..20].copy_from_slice(&new.to_be_bytes());
        let inc = update_u32(0xb861, old, new);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(inc, checksum(&h));
    }

    #[test]
    fn incremental_word_update_matches_recomputation() {
        let mut h = IPV4;
        // TTL 0x40 -> 0x3f: the word is TTL<<8 | protocol.
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let inc = update_u16(0xb861, old, new);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(inc, checksum(&h));
    }

    #[test]
    fn incremental_ip6_update_matches_recomputation() {
        // A pseudo-header-like block: two IPv6 addresses and a length word.
        let mut data = [0u8; 34];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        let words = |d: &[u8]| -> [u32; 4] {
            core::array::from_fn(|i| u32::from_ne_bytes(d[4 * i..4 * i + 4].try_into().unwrap()))
        };
        let before = checksum(&data);
        let old = words(&data[16..32]);
        let new_octets = [
            0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef,
        ];
        data[16..32].copy_from_slice(&new_octets);
        let new = words(&data[16..32]);
        assert_eq!(update_ip6(before, old, new), checksum(&data));
        // All-ones words replaced by zeros (the accumulator's carries): equal up to the
        // two one's-complement zeros.
        data[0..16].copy_from_slice(&[0xff; 16]);
        let c = checksum(&data);
        data[0..16].copy_from_slice(&[0; 16]);
        let got = update_ip6(c, [u32::MAX; 4], [0; 4]);
        let want = checksum(&data);
        assert!(
            got == want || (got | want == 0xffff && got & want == 0),
            "{got:#x} {want:#x}"
        );
    }

    #[test]
    fn udp_zero_checksum_stays_zero_and_computed_zero_becomes_ffff() {
        assert_eq!(udp_fixup(0, 0x1234), 0);
        assert_eq!(udp_fixup(0x1111, 0), 0xffff);
        assert_eq!(udp_fixup(0x1111, 0x2222), 0x2222);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(accumulate(0, &[0x01]), 0x0100);
        assert_eq!(checksum(&[0xff, 0xff]), 0);
    }
}
