//! A small seeded PRNG (xoshiro256++ seeded through SplitMix64) and the samplers the
//! simulator needs. Owned here so a seed gives the same run on every platform and every
//! version of the dependencies.

/// A deterministic pseudo-random generator: xoshiro256++ (Blackman and Vigna), seeded
/// with SplitMix64 so that any `u64`, zero included, is a good seed.
///
/// ```
/// use vllm_scaling_core::sim::SimRng;
///
/// let mut a = SimRng::new(7);
/// let mut b = SimRng::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let u = a.uniform();
/// assert!((0.0..1.0).contains(&u));
/// ```
#[derive(Clone, Debug)]
pub struct SimRng {
    s: [u64; 4],
}

impl SimRng {
    /// A generator for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self { s: [next(), next(), next(), next()] }
    }

    /// An independent generator derived from this one's seed and a stream number, so
    /// that adding draws to one stream never shifts another.
    #[must_use]
    pub fn stream(seed: u64, stream: u64) -> Self {
        Self::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03).rotate_left(17))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[0].wrapping_add(self.s[3]).rotate_left(23).wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform value in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform value in `(0, 1]`: safe to take the logarithm of.
    pub fn uniform_open0(&mut self) -> f64 {
        1.0 - self.uniform()
    }

    /// An index in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        // Multiply-shift: unbiased enough for n far below 2^64.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// An exponential variate with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.uniform_open0().ln()
    }

    /// A standard normal variate (Box–Muller).
    pub fn standard_normal(&mut self) -> f64 {
        let u1 = self.uniform_open0();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A Gamma variate with `shape` k > 0 and scale θ > 0 (Marsaglia–Tsang, with the
    /// `U^(1/k)` boost for k < 1).
    pub fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        if shape < 1.0 {
            let boost = self.uniform_open0().powf(1.0 / shape);
            return self.gamma(shape + 1.0, scale) * boost;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.standard_normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.uniform_open0();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * scale;
            }
        }
    }

    /// A Poisson variate with the given mean (Knuth's method for small means, a rounded
    /// normal approximation above 60).
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean > 60.0 {
            let x = (mean + mean.sqrt() * self.standard_normal()).round();
            return if x < 0.0 { 0 } else { x as u64 };
        }
        let limit = (-mean).exp();
        let mut k = 0u64;
        let mut p = self.uniform_open0();
        while p > limit {
            k += 1;
            p *= self.uniform_open0();
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let mut a = SimRng::new(42);
        let mut b = SimRng::new(42);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut c = SimRng::stream(42, 1);
        assert_ne!(xs[0], c.next_u64());
    }

    #[test]
    fn sample_means_are_close() {
        let mut r = SimRng::new(1);
        let n = 200_000;
        let mean = |f: &mut dyn FnMut() -> f64| (0..n).map(|_| f()).sum::<f64>() / f64::from(n);
        let e = mean(&mut || r.exponential(2.0));
        assert!((e - 2.0).abs() < 0.03, "exponential mean {e}");
        let mut r = SimRng::new(2);
        let g = mean(&mut || r.gamma(0.25, 4.0));
        assert!((g - 1.0).abs() < 0.03, "gamma mean {g}");
        let mut r = SimRng::new(3);
        let g = mean(&mut || r.gamma(5.0, 0.5));
        assert!((g - 2.5).abs() < 0.03, "gamma mean {g}");
        let mut r = SimRng::new(4);
        let p = mean(&mut || r.poisson(3.5) as f64);
        assert!((p - 3.5).abs() < 0.03, "poisson mean {p}");
        let mut r = SimRng::new(5);
        let u = mean(&mut || r.below(10) as f64);
        assert!((u - 4.5).abs() < 0.05, "below mean {u}");
    }
}
