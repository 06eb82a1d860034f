//! One retry policy for every loop that waits after a failure, and one deadline
//! for every call that must not hang.
//!
//! [`Backoff`]: exponential from a base, doubling, capped, with full jitter (a
//! uniform wait in `[0, step]`, so many replicas or requests failing together do not
//! come back together); when the other side said when to come back (`Retry-After`),
//! that, plus at most 5 %.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The waits before successive retries of one operation.
pub struct Backoff {
    builder: ExponentialBuilder,
    schedule: ExponentialBackoff,
    cap: Duration,
}

impl Backoff {
    /// Starts at `base`, doubles, never exceeds `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(base)
            .with_max_delay(cap)
            .with_factor(2.0)
            .without_max_times();
        Backoff {
            schedule: builder.build(),
            builder,
            cap,
        }
    }

    /// The next wait: uniform in `[0, step]`.
    pub fn wait(&mut self) -> Duration {
        self.next_after(None)
    }

    /// The next wait: `asked` and up to 5 % more when the other side gave one,
    /// else as [`Backoff::wait`]. The schedule moves on either way.
    pub fn next_after(&mut self, asked: Option<Duration>) -> Duration {
        let step = self.schedule.next().unwrap_or(self.cap);
        match asked {
            Some(asked) => asked.mul_f64(1.0 + 0.05 * fastrand::f64()),
            None => step.mul_f64(fastrand::f64()),
        }
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.schedule = self.builder.build();
    }
}

/// The call did not finish within its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no answer within {0:?}")]
pub struct Elapsed(pub Duration);

/// Runs `call`, giving up after `limit`.
pub async fn within<T>(limit: Duration, call: impl Future<Output = T>) -> Result<T, Elapsed> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| Elapsed(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_jittered_and_floored() {
        let mut d = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..50 {
            assert!(d.wait() <= Duration::from_secs(2));
        }
        // Deep in the schedule, Retry-After still decides: no later than asked + 5 %.
        for _ in 0..20 {
            let wait = d.next_after(Some(Duration::from_secs(10)));
            assert!(wait >= Duration::from_secs(10), "{wait:?}");
            assert!(wait <= Duration::from_millis(10_500), "{wait:?}");
        }
        d.reset();
        assert!(d.wait() <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_is_given_up() {
        let slow = within(Duration::from_secs(1), std::future::pending::<()>()).await;
        assert_eq!(slow, Err(Elapsed(Duration::from_secs(1))));
        let quick = within(Duration::from_secs(1), async { 7 }).await;
        assert_eq!(quick, Ok(7));
    }
}
