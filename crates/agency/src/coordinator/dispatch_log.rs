//! Noticing that the broker lost dispatched work: it came back without its log, or a replica
//! missing the tail was made leader. The ranges dispatched before would never arrive, so the
//! runs dispatch their unsettled work again, and workers are told to join the group again (a
//! librdkafka consumer does not follow a log made again).

use super::Coordinator;
use crate::outage::retrying;
use events::{Control, LogWatch, Position, Reading, CONTROL_CHANNEL, DISPATCH_TOPIC};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often a coordinator reads where the dispatch topic's partitions end.
const READING: Duration = Duration::from_secs(5);
/// How soon a low reading is read again to confirm it.
const CONFIRM: Duration = Duration::from_secs(1);

/// What this coordinator published to the dispatch topic, and a count of the losses seen, which
/// each run watches.
#[derive(Debug)]
pub(super) struct DispatchLog {
    watch: Mutex<LogWatch>,
    losses: watch::Sender<u64>,
    /// When the last loss was acted on: one log lost is seen by many publishes and readings
    /// at once, and everything unsettled is dispatched again once for all of them.
    acted: Mutex<Option<std::time::Instant>>,
}

/// Losses seen within this long of one acted on are the same loss.
const SAME_LOSS: Duration = Duration::from_secs(10);

impl Default for DispatchLog {
    fn default() -> Self {
        Self {
            watch: Mutex::default(),
            losses: watch::Sender::new(0),
            acted: Mutex::default(),
        }
    }
}

impl DispatchLog {
    /// Notes a range published at `position`; says how the log was lost when the broker gave
    /// that position before.
    pub(super) fn published(&self, position: &Position) -> Option<String> {
        let (partition, offset) = position.partition_offset();
        self.watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .landed(partition, offset)
    }

    /// Changes each time the broker lost dispatched work.
    pub(super) fn losses(&self) -> watch::Receiver<u64> {
        self.losses.subscribe()
    }
}

impl Coordinator {
    /// Reads, until `shutdown`, where the dispatch topic ends, against where this coordinator's
    /// ranges put it; when it ends before them on two readings, tells workers to join the group
    /// again and every run to dispatch its unsettled work again. A broker out of reach is read
    /// again later: it says nothing of the log.
    pub async fn watch_dispatch_log(&self, shutdown: CancellationToken) {
        let mut wait = READING;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = READING;
            if self
                .dispatched
                .watch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                continue;
            }
            let ends = match self.broker.ends(DISPATCH_TOPIC).await {
                Ok(ends) => ends,
                Err(error) => {
                    tracing::debug!(%error, "cannot read where the dispatch topic ends");
                    continue;
                }
            };
            let reading = self
                .dispatched
                .watch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read(&ends);
            match reading {
                Reading::Intact => {}
                Reading::Suspect => wait = CONFIRM,
                Reading::Lost(detail) => self.lost(detail).await,
            }
        }
    }

    /// Tells workers to join the dispatch group again, and every run of this coordinator to
    /// dispatch its unsettled work again.
    pub(super) async fn lost(&self, detail: String) {
        {
            let mut acted = self
                .dispatched
                .acted
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if acted.is_some_and(|at| at.elapsed() < SAME_LOSS) {
                return tracing::debug!(%detail, "a loss already acted on");
            }
            *acted = Some(std::time::Instant::now());
        }
        tracing::warn!(%detail, "the broker lost dispatched work; dispatching what is unsettled again");
        let control = Control::LogLost {
            topic: self.broker.qualified(DISPATCH_TOPIC),
            detail,
        };
        // Told before anything is dispatched again, so workers read it from their new members.
        match events::encode("a lost log", &control) {
            Ok(payload) => {
                let store = &self.store;
                if let Err(error) = retrying("telling workers the log was lost", || {
                    store.publish(CONTROL_CHANNEL, payload.clone())
                })
                .await
                {
                    tracing::error!(%error, "cannot tell workers the broker lost its log");
                }
            }
            Err(error) => tracing::error!(%error, "cannot tell workers the broker lost its log"),
        }
        self.dispatched.losses.send_modify(|losses| *losses += 1);
    }
}
