//! NumPy's legacy global generator (`np.random.seed`, `np.random.shuffle`), bit for bit: the
//! Mersenne Twister MT19937 with its classic integer seeding, and the legacy shuffle's
//! Fisher-Yates pass with rejection-sampled bounded integers. RDE draws its noise index with it.

/// MT19937's state words.
const N: usize = 624;
const M: usize = 397;

/// `numpy.random.RandomState` as far as seeding and shuffling go.
pub struct NumpyRandomState {
    key: [u32; N],
    pos: usize,
}

impl NumpyRandomState {
    /// The state `np.random.seed(seed)` sets for a whole-number seed below 2^32 (Matsumoto and
    /// Nishimura's `init_genrand`).
    pub fn seed(seed: u32) -> NumpyRandomState {
        let mut key = [0u32; N];
        key[0] = seed;
        for i in 1..N {
            let prev = key[i - 1];
            key[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        NumpyRandomState { key, pos: N }
    }

    /// Regenerates the N state words.
    fn reload(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..N {
            let y = (self.key[i] & UPPER) | (self.key[(i + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.key[i] = self.key[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// The next 32-bit output (tempered).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.reload();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A uniform integer in `[0, max]` as NumPy's legacy `random_interval` draws it: 32-bit
    /// outputs masked to `max`'s bit length, rejected until within range (`max < 2^32`).
    pub fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mask = u32::MAX >> max.leading_zeros();
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// Shuffles `x` in place as `np.random.shuffle` does a 1-D array: for `i` from `len - 1`
    /// down to 1, swap `x[i]` with `x[interval(i)]`. Arrays of 2^32 or more entries are beyond
    /// the 32-bit path and not supported (a caller's bound).
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        assert!(
            x.len() <= u32::MAX as usize,
            "shuffle of {} entries",
            x.len()
        );
        for i in (1..x.len()).rev() {
            let j = self.interval(i as u32) as usize;
            x.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs of MT19937 seeded with 5489 (the reference implementation's default
    /// seed): 3499211612, 581869302, 3890346734, 3586334585, 545404204; and the 10,000th,
    /// 4123659995 (C++11's `std::mt19937` requirement).
    #[test]
    fn the_reference_outputs_of_mt19937() {
        let mut r = NumpyRandomState::seed(5489);
        let first: Vec<u32> = (0..5).map(|_| r.next_u32()).collect();
        assert_eq!(
            first,
            [
                3_499_211_612,
                581_869_302,
                3_890_346_734,
                3_586_334_585,
                545_404_204
            ]
        );
        for _ in 5..9999 {
            r.next_u32();
        }
        assert_eq!(r.next_u32(), 4_123_659_995);
    }

    #[test]
    fn intervals_stay_within_their_bound() {
        let mut r = NumpyRandomState::seed(1);
        for max in [0u32, 1, 2, 3, 7, 8, 1000, u32::MAX] {
            for _ in 0..100 {
                assert!(r.interval(max) <= max);
            }
        }
        let mut x: Vec<u32> = (0..50).collect();
        r.shuffle(&mut x);
        let mut sorted = x.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(x, sorted);
    }
}
