//! A small seeded input generator for the bounded fuzz tests of the parsers of untrusted
//! input (ARP, health answers, discovery answers, the config file). Deterministic: a
//! failing case is reproduced by its seed and index. Test builds only.

/// xorshift64*: fast, good enough to shake parsers, and reproducible.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Up to `max` random bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// One of `xs`.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// `base` with one to four edits: a byte changed, inserted or deleted, a run copied
    /// elsewhere, a byte from `interesting` spliced in, or the tail cut off.
    pub fn mutate(&mut self, base: &[u8], interesting: &[&[u8]]) -> Vec<u8> {
        let mut v = base.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(v.len() + 1);
            match self.below(6) {
                0 if at < v.len() => v[at] = self.next_u64() as u8,
                1 => v.insert(at, self.next_u64() as u8),
                2 if at < v.len() => {
                    v.remove(at);
                }
                3 if !v.is_empty() => {
                    let from = self.below(v.len());
                    let len = self.below(v.len() - from + 1).min(64);
                    let run = v[from..from + len].to_vec();
                    v.splice(at..at, run);
                }
                4 if !interesting.is_empty() => {
                    let s = self.pick(interesting).to_vec();
                    v.splice(at..at, s);
                }
                _ => v.truncate(at),
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.bytes(100), b.bytes(100));
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }
}
