//! Delays between attempts: exponential, capped, with full jitter; or, when the
//! intake said when to come back (`Retry-After`), that, plus at most 5 % so that
//! many senders do not return at the same instant.

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

    /// The next delay: `retry_after` and up to 5 % more when the intake gave one,
    /// else uniform in [0, step] (full jitter).
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let step = self.schedule.next().unwrap_or(self.cap);
        match retry_after {
            Some(asked) => asked.mul_f64(1.0 + 0.05 * fastrand::f64()),
            None => step.mul_f64(fastrand::f64()),
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
        // Deep in the schedule, Retry-After still decides: no later than asked + 5 %.
        for _ in 0..20 {
            let wait = d.next(Some(Duration::from_secs(10)));
            assert!(wait >= Duration::from_secs(10), "{wait:?}");
            assert!(wait <= Duration::from_millis(10_500), "{wait:?}");
        }
        d.reset();
        assert!(d.next(None) <= Duration::from_millis(100));
    }
}
