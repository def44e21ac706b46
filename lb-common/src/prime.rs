//! The Maglev table sizes' rule: a table size must be prime (the daemon builds the
//! tables, its configuration checks `--table-size`).

/// Whether `n` is a prime number.
///
/// Trial division is enough: it runs once per table build and at most ~2^16 / 3 divisions.
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    // Every prime above 3 is 6k ± 1; u64 keeps `d * d` from overflowing near u32::MAX.
    let n = u64::from(n);
    let mut d = 5u64;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;

    use super::*;

    #[test]
    fn is_prime_agrees_with_a_sieve_and_on_large_values() {
        let limit = 10_000usize;
        let mut composite = vec![false; limit];
        for i in 2..limit {
            for j in (i * i..limit).step_by(i) {
                composite[j] = true;
            }
        }
        for (n, &composite) in composite.iter().enumerate() {
            assert_eq!(is_prime(n as u32), n >= 2 && !composite, "n = {n}");
        }
        assert!(is_prime(65537));
        assert!(!is_prime(65535));
        assert!(is_prime(4_294_967_291), "largest u32 prime");
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(65521 * 65519), "product of two large primes");
    }
}
