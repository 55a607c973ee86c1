//! A small deterministic random number generator and the integer math the generator
//! needs, so that one seed gives the same workload on every machine.
//!
//! The generator is xoshiro256** seeded through SplitMix64 (the seeding its authors
//! recommend). Bounded draws use the widening-multiply method with rejection, so they
//! are exactly uniform and depend on nothing but the integer sequence. No floating point
//! appears anywhere: where exchange-core uses `Math.pow` or a Pareto sample, this module
//! computes the same quantity with integer arithmetic.

/// SplitMix64: used to expand a 64-bit seed into xoshiro's 256-bit state, and to derive
/// per-stream seeds.
#[derive(Clone, Copy, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// xoshiro256**, a fast all-purpose 64-bit generator.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`. Distinct `(seed, stream)` pairs give independent streams.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut sm = SplitMix64::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut s = [0u64; 4];
        for word in &mut s {
            *word = sm.next_u64();
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0, "below(0)");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        let mut low = m as u64;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// Uniform in `0..n` for a `u32` bound (exchange-core's `nextInt(n)`).
    pub fn below32(&mut self, n: u32) -> u32 {
        self.below(u64::from(n)) as u32
    }
}

/// `ln(10)` as a Q62 fixed-point number.
const LN10_Q62: u128 = 10_618_799_479_599_967_254;
const Q62: u32 = 62;

/// `floor(10^(micros / 1_000_000))`, for exponents up to about 19, in integer math.
///
/// The fractional power is `exp(f · ln 10)` summed as a Taylor series in Q62 fixed point;
/// the result is exact to far better than one unit for the prices used here, and being
/// integer arithmetic it is the same on every machine.
pub fn pow10_micros(micros: u64) -> u64 {
    let int_part = (micros / 1_000_000) as u32;
    let frac = u128::from(micros % 1_000_000);
    let x = frac * LN10_Q62 / 1_000_000; // x = frac · ln10, Q62, below 2.31 · 2^62
    let one = 1u128 << Q62;
    let mut sum = one;
    let mut term = one;
    let mut n = 1u128;
    while term > 0 {
        term = term * x / (n << Q62);
        sum += term;
        n += 1;
    }
    let scaled = sum * u128::from(10u64.pow(int_part));
    u64::try_from(scaled >> Q62).unwrap_or(u64::MAX)
}

/// Integer cube root: the largest `r` with `r³ <= n`.
pub fn icbrt(n: u128) -> u128 {
    if n == 0 {
        return 0;
    }
    // Start from a power of two at or above the root, then Newton steps downwards.
    let bits = 128 - n.leading_zeros();
    let mut x: u128 = 1u128 << bits.div_ceil(3);
    loop {
        let y = (2 * x + n / (x * x)) / 3;
        if y >= x {
            break;
        }
        x = y;
    }
    while x * x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x
}

/// A Pareto(shape 1.5) sample up to a constant factor: `U^(-2/3)` for `U` uniform on
/// `(0, 1]`, scaled by `2^(32/3)`. Used as a relative weight, so the constant cancels.
pub fn pareto_1_5_weight(rng: &mut Rng) -> u128 {
    let u = u128::from(rng.next_u32()) + 1; // 1..=2^32, U = u / 2^32
    let t = (1u128 << 48) / u; // U^-1 · 2^16
    icbrt(t * t) // U^(-2/3) · 2^(32/3)
}

/// `floor(X)` for `X` Pareto(scale 1, shape 1.5): `floor(U^(-2/3))`, exactly.
pub fn pareto_1_5_floor(rng: &mut Rng) -> u64 {
    let u = u128::from(rng.next_u32()) + 1;
    // U^-2 = 2^64 / u^2; floor(cbrt(floor(y))) == floor(cbrt(y)) for real y >= 0.
    let y = (1u128 << 64) / (u * u);
    icbrt(y) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(42, 7);
        let mut b = Rng::new(42, 7);
        let mut c = Rng::new(42, 8);
        let xs: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..16).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn xoshiro_reference_output() {
        // State 1, 2, 3, 4 gives 11520, 0, 1509978240, 1215971899390074240 (reference C code).
        let mut r = Rng { s: [1, 2, 3, 4] };
        let out: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(
            out,
            vec![11520, 0, 1_509_978_240, 1_215_971_899_390_074_240]
        );
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::new(1, 0);
        let mut seen = [0u32; 6];
        for _ in 0..60_000 {
            let v = r.below(6) as usize;
            seen[v] += 1;
        }
        for count in seen {
            assert!((9_000..11_000).contains(&count), "{seen:?}");
        }
    }

    #[test]
    fn pow10_matches_known_values() {
        assert_eq!(pow10_micros(0), 1);
        assert_eq!(pow10_micros(3_000_000), 1000);
        assert_eq!(pow10_micros(6_000_000), 1_000_000);
        // 10^3.3 = 1995.26..., 10^4.5 = 31622.77..., 10^6.3 = 1995262.3...
        assert_eq!(pow10_micros(3_300_000), 1995);
        assert_eq!(pow10_micros(4_500_000), 31_622);
        assert_eq!(pow10_micros(6_300_000), 1_995_262);
    }

    #[test]
    fn icbrt_is_exact() {
        for n in [
            0u128,
            1,
            7,
            8,
            9,
            26,
            27,
            28,
            999,
            1000,
            1001,
            u64::MAX as u128,
        ] {
            let r = icbrt(n);
            assert!(r * r * r <= n && (r + 1) * (r + 1) * (r + 1) > n, "{n}");
        }
        assert_eq!(icbrt(1u128 << 96), 1u128 << 32);
    }
}
