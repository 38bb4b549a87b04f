//! Seeded faults over the in-memory twins, for the deterministic simulation of the engine
//! (`crates/agency/tests/simulation.rs`).
//!
//! [`ChaosBroker`] is a log with consumer groups that, unlike [`crate::MemoryBroker`], keeps
//! what each member took and has not committed: when the member is dropped (its process
//! crashed) those messages go to the group again, as Kafka redelivers from the last committed
//! offset. [`ChaosStore`] is the [`crate::MemoryStore`] behind a layer that fails calls. Both
//! draw every fault from one [`Dice`]: a seeded generator, so a seed names a run's faults.
//!
//! The faults, each with its own probability in [`Faults`]:
//! - a call fails as if the server were away, before doing anything;
//! - a write is done, then fails (its answer was lost), so the caller does it again;
//! - a call is delayed;
//! - a message is delivered again later, or after the one behind it;
//! - a notice or announcement is lost, or delivered twice.

mod broker;
mod store;

pub use broker::ChaosBroker;
pub use store::ChaosStore;

use crate::error::Error;
use std::sync::Mutex;
use std::time::Duration;

/// How often each fault happens: probabilities per call, from 0 (never) to 1 (always).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// A call fails as if the server were away, doing nothing.
    pub fail: f64,
    /// A write is done, then fails: the caller cannot tell it from `fail`.
    pub lose_answer: f64,
    /// A call waits first, up to `max_delay`.
    pub delay: f64,
    /// The longest wait of a delayed call.
    pub max_delay: Duration,
    /// A delivered message is delivered once more, later.
    pub duplicate: f64,
    /// A message is delivered after the one behind it.
    pub reorder: f64,
    /// A notice or announcement never arrives.
    pub drop_notice: f64,
    /// A notice or announcement arrives twice.
    pub duplicate_notice: f64,
}

impl Faults {
    /// Intensities drawn from `seed`: some seeds are calm, some stormy.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_fa17);
        let mut upto = |max: f64| rng.f64() * max;
        Self {
            fail: upto(0.08),
            lose_answer: upto(0.05),
            delay: upto(0.3),
            max_delay: Duration::from_millis(500),
            duplicate: upto(0.2),
            reorder: upto(0.3),
            drop_notice: upto(0.5),
            duplicate_notice: upto(0.2),
        }
    }
}

/// The seeded source of every fault of one run, and the log of the faults it injected.
#[derive(Debug)]
pub struct Dice {
    faults: Faults,
    rng: Mutex<fastrand::Rng>,
    log: Mutex<Vec<String>>,
}

impl Dice {
    /// Faults at `faults`' rates, drawn from `seed`.
    pub fn new(seed: u64, faults: Faults) -> Self {
        Self {
            faults,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            log: Mutex::new(Vec::new()),
        }
    }

    /// The rates faults are drawn at.
    pub fn faults(&self) -> Faults {
        self.faults
    }

    /// Whether an event of probability `p` happens now; when it does, `what` is logged.
    pub fn roll(&self, p: f64, what: impl FnOnce() -> String) -> bool {
        let hit = p > 0.0 && self.rng.lock().is_ok_and(|mut rng| rng.f64() < p);
        if hit {
            self.note(what());
        }
        hit
    }

    /// A number in `0..n`, for choices the harness makes (which process to crash, when).
    pub fn below(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.rng.lock().map_or(0, |mut rng| rng.u64(0..n))
    }

    /// Adds a line to the fault log.
    pub fn note(&self, line: String) {
        if let Ok(mut log) = self.log.lock() {
            log.push(line);
        }
    }

    /// The faults injected so far, in order.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// Waits before a call, sometimes.
    async fn maybe_delay(&self, what: &str) {
        let faults = self.faults;
        if self.roll(faults.delay, || format!("delay {what}")) {
            let millis = self.below(faults.max_delay.as_millis() as u64 + 1);
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
    }

    /// Fails a call before it does anything, sometimes (after a delay, sometimes).
    async fn before(&self, backend: &'static str, what: &str) -> crate::Result<()> {
        self.maybe_delay(what).await;
        if self.roll(self.faults.fail, || format!("fail {what}")) {
            return Err(unavailable(backend, what));
        }
        Ok(())
    }

    /// Turns a write's success into a failure, sometimes: it was done, its answer lost.
    fn after<T>(
        &self,
        backend: &'static str,
        what: &str,
        done: crate::Result<T>,
    ) -> crate::Result<T> {
        if done.is_ok()
            && self.roll(self.faults.lose_answer, || {
                format!("lose the answer to {what}")
            })
        {
            return Err(unavailable(backend, what));
        }
        done
    }
}

fn unavailable(backend: &'static str, what: &str) -> Error {
    Error::Unavailable {
        backend,
        message: format!("injected fault: {what}"),
    }
}
