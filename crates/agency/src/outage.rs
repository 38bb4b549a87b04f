//! Riding out a store or broker outage: operations that failed because a server could not be
//! reached are tried again with backoff, instead of failing the work they belong to.

use std::future::Future;

/// Whether `error` comes from a server that could not be reached (retrying may help).
pub(crate) fn is_outage(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<events::Error>()
            .is_some_and(events::Error::is_retryable)
    })
}

/// Runs `operation` until it succeeds or fails for a reason retrying cannot fix; while the
/// server is unreachable it waits with backoff and says so, naming `what` was being done.
pub(crate) async fn retrying<T, F, Fut>(what: &str, mut operation: F) -> events::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = events::Result<T>>,
{
    let mut wait = None;
    loop {
        match operation().await {
            Err(error) if error.is_retryable() => {
                let next = events::backoff(wait);
                tracing::warn!(%error, retry_in = ?next, "{what}: server unreachable");
                tokio::time::sleep(next).await;
                wait = Some(next);
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    fn unavailable() -> events::Error {
        events::Error::Unavailable {
            backend: "redis",
            message: "connection refused".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_waited_out_and_a_refusal_is_not() {
        let tries = AtomicU32::new(0);
        let value = retrying("reading", || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(unavailable()),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(value, Ok(7));
        assert_eq!(tries.load(Ordering::SeqCst), 4);

        let refused = retrying("writing", || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(events::Error::Corrupt {
                what: "x".into(),
                message: "y".into(),
            })
        })
        .await;
        assert!(refused.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 5, "a refusal is not retried");
    }

    #[test]
    fn outages_are_recognised_through_context() {
        let wrapped = anyhow::Error::from(unavailable()).context("saving the context");
        assert!(is_outage(&wrapped));
        assert!(!is_outage(&anyhow::anyhow!("a bad session")));
        assert_eq!(events::backoff(None), Duration::from_millis(100));
        assert_eq!(
            events::backoff(Some(Duration::from_secs(4))),
            Duration::from_secs(5)
        );
    }
}
