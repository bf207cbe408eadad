//! What every layer needs for its failures, and nothing engine- or sink-specific:
//!
//! * [`ErrorChain`]: an error displayed with its whole `source()` chain, for logs, CLI
//!   output and the status endpoint.
//! * [`Backoff`]: the one exponential backoff with jitter behind every retry loop: source
//!   reconnects (`[pipeline] reconnect_initial_backoff` / `reconnect_max_backoff`), sink
//!   requests and deliveries (`retry.initial_backoff` / `retry.max_backoff`), NATS stream
//!   creation and on-demand backfill chunks.
//!
//! Does not own: which errors are transient ([`crate::source::ErrorClass`] and each
//! boundary's `is_transient`), nor when a loop resets its backoff (the caller decides: the
//! service after a connection that stayed up, the on-demand backfill after a chunk read).

use std::time::Duration;

/// Displays an error with its whole `source()` chain: `outer: inner: innermost`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Errors often repeat their source's text in their own message (`cannot read X: No
        // such file`): a cause already said is not said again.
        let mut said = self.0.to_string();
        f.write_str(&said)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            let text = e.to_string();
            if !text.is_empty() && !said.contains(&text) {
                write!(f, ": {text}")?;
                said.push_str(&text);
            }
            cur = e.source();
        }
        Ok(())
    }
}

/// Exponential backoff with jitter. The base wait starts at `initial`, doubles after every
/// [`Backoff::next_wait`] and is capped at `max`; each wait is the base plus up to 25%
/// jitter, so many retriers (sources of one process, processes against one server) do not
/// retry in lockstep. [`Backoff::reset`] starts over at `initial`.
///
/// The jitter comes from a small PRNG (splitmix64): [`Backoff::new`] seeds it from the clock
/// and a process-wide counter, [`Backoff::seeded`] from a given seed so that tests see the
/// same waits every run.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    base: Duration,
    rng: u64,
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`, with jitter seeded from the clock.
    pub fn new(initial: Duration, max: Duration) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_nanos() as u64)
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self::seeded(
            initial,
            max,
            nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id()),
        )
    }

    /// The same with a fixed jitter seed (deterministic waits, for tests).
    pub fn seeded(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial,
            max,
            base: initial,
            rng: seed,
        }
    }

    /// The base of the next wait, without jitter (what `next_wait` jitters).
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The wait before the next attempt: the current base plus jitter. Advances the base
    /// (doubling, capped at `max`).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.jitter(self.base);
        self.base = (self.base * 2).min(self.max);
        wait
    }

    /// The longest base wait (`max`, or `initial` if that is larger) with jitter: the cap of
    /// a wait stretched by a receiver's `Retry-After` hint.
    pub fn cap(&mut self) -> Duration {
        self.jitter(self.max.max(self.initial))
    }

    /// Starts over at `initial` (after a success, or a connection that stayed up).
    pub fn reset(&mut self) {
        self.base = self.initial;
    }

    /// `d` plus up to 25% (exclusive) of it.
    fn jitter(&mut self, d: Duration) -> Duration {
        // splitmix64: tiny, fast, and good enough to spread retries.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 random bits as a fraction in [0, 1), scaled to [0, 0.25).
        let frac = (z >> 11) as f64 / (1u64 << 53) as f64 / 4.0;
        d.mul_f64(1.0 + frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_cap_with_at_most_a_quarter_of_jitter() {
        let mut b = Backoff::seeded(ms(100), ms(500), 7);
        let mut bases = Vec::new();
        for _ in 0..6 {
            let base = b.base();
            let wait = b.next_wait();
            assert!(
                wait >= base && wait < base.mul_f64(1.25),
                "{wait:?} for {base:?}"
            );
            bases.push(base.as_millis());
        }
        assert_eq!(bases, [100, 200, 400, 500, 500, 500]);
    }

    #[test]
    fn reset_starts_over_at_the_initial_wait() {
        let mut b = Backoff::seeded(ms(100), ms(500), 7);
        for _ in 0..4 {
            b.next_wait();
        }
        assert_eq!(b.base(), ms(500));
        b.reset();
        assert_eq!(b.base(), ms(100));
        let w = b.next_wait();
        assert!(w >= ms(100) && w < ms(125), "{w:?}");
        assert_eq!(b.base(), ms(200));
    }

    #[test]
    fn the_same_seed_gives_the_same_waits_and_the_jitter_varies() {
        let waits = |seed| {
            let mut b = Backoff::seeded(ms(1000), ms(1000), seed);
            (0..50).map(|_| b.next_wait()).collect::<Vec<_>>()
        };
        assert_eq!(waits(42), waits(42));
        assert_ne!(waits(42), waits(43));
        let w = waits(42);
        let (lo, hi) = (w.iter().min().expect("min"), w.iter().max().expect("max"));
        // Spread over the 25% band, not stuck at one end.
        assert!(*lo < ms(1050) && *hi > ms(1200), "{lo:?}..{hi:?}");
        assert!(w.iter().all(|d| *d >= ms(1000) && *d < ms(1250)));
    }

    #[test]
    fn the_cap_is_the_larger_bound_with_jitter() {
        let mut b = Backoff::seeded(ms(300), ms(200), 1);
        let c = b.cap();
        assert!(c >= ms(300) && c < ms(375), "{c:?}");
        let mut b = Backoff::seeded(ms(100), ms(2000), 1);
        let c = b.cap();
        assert!(c >= ms(2000) && c < ms(2500), "{c:?}");
    }

    #[test]
    fn unseeded_backoffs_differ() {
        let a: Vec<_> = {
            let mut b = Backoff::new(ms(1000), ms(1000));
            (0..8).map(|_| b.next_wait()).collect()
        };
        let b: Vec<_> = {
            let mut b = Backoff::new(ms(1000), ms(1000));
            (0..8).map(|_| b.next_wait()).collect()
        };
        assert_ne!(a, b);
    }

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_chain_says_each_cause_once() {
        let e = E(
            "cannot read x: no such file",
            Some(Box::new(E(
                "no such file",
                Some(Box::new(E("os error 2", None))),
            ))),
        );
        assert_eq!(
            ErrorChain(&e).to_string(),
            "cannot read x: no such file: os error 2"
        );
    }
}
