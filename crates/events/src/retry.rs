//! The one way to wait and try again: a backoff schedule (100 ms, doubling up to 5 s), waits
//! that end early when a cancellation token fires, and [`retry`], which runs an operation until
//! it succeeds, fails for a reason retrying cannot fix, runs out of patience, or is stopped.
//! Every loop that waits out an unreachable server uses it.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first wait.
const FIRST: Duration = Duration::from_millis(100);
/// The longest wait.
const LONGEST: Duration = Duration::from_secs(5);

/// How long to wait before retrying after waiting `previous` (`None` before the first retry):
/// 100 ms, doubling up to 5 s.
pub fn backoff(previous: Option<Duration>) -> Duration {
    previous.map_or(FIRST, |wait| (wait * 2).min(LONGEST))
}

/// An error that says whether the same call may succeed later.
pub trait Retryable {
    /// Whether trying the same call again may help (a server that could not be reached).
    fn is_retryable(&self) -> bool;
}

impl Retryable for crate::Error {
    fn is_retryable(&self) -> bool {
        crate::Error::is_retryable(self)
    }
}

/// A backoff schedule in progress.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    last: Option<Duration>,
}

impl Backoff {
    /// A schedule that starts at its first wait.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next wait of the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let next = backoff(self.last);
        self.last = Some(next);
        next
    }

    /// Waits the next delay; `false` when `stop` fired first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next_delay();
        sleep_or_stop(delay, stop).await
    }
}

/// Sleeps `delay`; `false` when `stop` fired first.
pub async fn sleep_or_stop(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// Runs `operation` until it succeeds or fails for a reason retrying cannot fix; while it fails
/// retryably it waits with [`backoff`] and says so, naming `what`. After `patience` (forever when
/// `None`) the last error is returned. `None` when `stop` fires first.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    stop: &CancellationToken,
    patience: Option<Duration>,
    mut operation: F,
) -> Option<Result<T, E>>
where
    E: Retryable + Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut schedule = Backoff::new();
    loop {
        match operation().await {
            Err(error)
                if error.is_retryable()
                    && patience.is_none_or(|patience| started.elapsed() < patience) =>
            {
                // Never past the patience: the last try is at its end, not a backoff after it.
                let left = patience.map(|patience| patience.saturating_sub(started.elapsed()));
                let delay = left.map_or(schedule.next_delay(), |left| {
                    schedule.next_delay().min(left)
                });
                crate::telemetry::OUTAGE_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%error, retry_in = ?delay, "{what}: server unreachable");
                if !sleep_or_stop(delay, stop).await {
                    return None;
                }
            }
            done => return Some(done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unavailable() -> crate::Error {
        crate::Error::Unavailable {
            backend: "redis",
            message: "connection refused".into(),
        }
    }

    #[test]
    fn the_schedule_doubles_up_to_five_seconds() {
        let mut schedule = Backoff::new();
        let waits: Vec<u64> = (0..8)
            .map(|_| schedule.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(Some(Duration::from_secs(4))), LONGEST);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_waited_out_a_refusal_is_not_and_stop_ends_the_wait() {
        let never = CancellationToken::new();
        let tries = AtomicU32::new(0);
        let value = retry("reading", &never, None, || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(unavailable()),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(value, Some(Ok(7)));
        assert_eq!(tries.load(Ordering::SeqCst), 4);

        let refused = retry("writing", &never, None, || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(crate::Error::Corrupt {
                what: "x".into(),
                message: "y".into(),
            })
        })
        .await;
        assert!(matches!(refused, Some(Err(_))));
        assert_eq!(tries.load(Ordering::SeqCst), 5, "a refusal is not retried");

        let impatient = retry(
            "connecting",
            &never,
            Some(Duration::from_secs(1)),
            || async { Err::<(), _>(unavailable()) },
        )
        .await;
        assert_eq!(
            impatient,
            Some(Err(unavailable())),
            "gives up after its patience"
        );

        let stop = CancellationToken::new();
        stop.cancel();
        let stopped = retry("stopping", &stop, None, || async {
            Err::<(), _>(unavailable())
        })
        .await;
        assert_eq!(stopped, None);
    }
}
