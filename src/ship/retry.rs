//! Delays between attempts: exponential, capped, with full jitter, and never shorter
//! than what the intake asked for with `Retry-After`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The delays before successive retries of one request.
pub struct Delays {
    builder: ExponentialBuilder,
    schedule: ExponentialBackoff,
    cap: Duration,
}

impl Delays {
    /// Starts at `base`, doubles, never exceeds `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(base)
            .with_max_delay(cap)
            .with_factor(2.0)
            .without_max_times();
        Delays {
            schedule: builder.build(),
            builder,
            cap,
        }
    }

    /// The next delay: uniform in [0, step] (full jitter), raised to `at_least`.
    pub fn next(&mut self, at_least: Option<Duration>) -> Duration {
        let step = self.schedule.next().unwrap_or(self.cap);
        let jittered = step.mul_f64(fastrand::f64());
        match at_least {
            Some(floor) => jittered.max(floor),
            None => jittered,
        }
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.schedule = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_jittered_and_floored() {
        let mut d = Delays::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..50 {
            assert!(d.next(None) <= Duration::from_secs(2));
        }
        assert!(d.next(Some(Duration::from_secs(10))) >= Duration::from_secs(10));
        d.reset();
        assert!(d.next(None) <= Duration::from_millis(100));
    }
}
