//! How a worker takes ranges: at most `ranges_in_flight` run, up to [`WAITING`] more wait, the
//! partitions paused while that many wait, and offsets committed only past ranges that all
//! finished (by the consumer that handed them out).

use super::{Worker, WAITING};
use crate::outage;
use events::{Consumer, Message, Position, Watermarks};
use futures_util::FutureExt as _;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// A range that finished: the consumer it came from, and its message's position.
pub(super) type Finished = (u64, Position);

/// What a worker's loop holds between messages.
pub(super) struct Taking {
    worker: Arc<Worker>,
    limit: usize,
    pub(super) in_flight: usize,
    pub(super) waiting: VecDeque<(u64, Message)>,
    paused: bool,
    watermarks: Watermarks,
    /// Which consumer a message came from: after the broker lost its log the member joins
    /// again, and what the old consumer handed out is finished but never committed.
    member: u64,
    /// When the consumer was joined last.
    pub(super) joined: Instant,
    done: mpsc::UnboundedSender<Finished>,
}

impl Taking {
    /// Taking for `worker`, whose ranges say on `done` when they finish.
    pub(super) fn new(worker: Arc<Worker>, done: mpsc::UnboundedSender<Finished>) -> Self {
        let limit = worker.options.ranges_in_flight.max(1);
        Self {
            worker,
            limit,
            in_flight: 0,
            waiting: VecDeque::new(),
            paused: false,
            watermarks: Watermarks::default(),
            member: 0,
            joined: Instant::now(),
            done,
        }
    }

    /// Runs a range in a task of its own.
    fn start(&self, (member, message): (u64, Message)) {
        let worker = self.worker.clone();
        let done = self.done.clone();
        tokio::spawn(async move {
            let handled = AssertUnwindSafe(worker.handle(&message))
                .catch_unwind()
                .await;
            if handled.is_err() {
                tracing::error!(topic = %message.topic, partition = message.partition, offset = message.offset, "handling a work item panicked");
            }
            let _ = done.send((member, Position::of(&message)));
        });
    }

    /// A message taken: run at once, or waiting (the partitions paused when enough wait).
    pub(super) fn took(&mut self, message: Message, consumer: &mut dyn Consumer) {
        self.watermarks.taken(&Position::of(&message));
        if self.in_flight < self.limit {
            self.in_flight += 1;
            self.start((self.member, message));
            return;
        }
        self.waiting.push_back((self.member, message));
        // Also when already paused: a rebalance may have assigned new partitions.
        if self.waiting.len() >= WAITING {
            match consumer.pause() {
                Ok(()) => self.paused = true,
                Err(error) => tracing::warn!(%error, "cannot pause the dispatch partitions"),
            }
        }
    }

    /// Commits what can be now that the range at `position` finished, if its consumer is this.
    pub(super) async fn commit(&mut self, (from, position): Finished, consumer: &mut dyn Consumer) {
        if from == self.member {
            if let Some(next) = self.watermarks.done(&position) {
                outage::commit(consumer, &next).await;
            }
        }
    }

    /// A range finished: what waits starts, and the partitions resume when half of it has.
    pub(super) async fn finished(&mut self, finished: Finished, consumer: &mut dyn Consumer) {
        self.commit(finished, consumer).await;
        match self.waiting.pop_front() {
            Some(message) => self.start(message),
            None => self.in_flight -= 1,
        }
        if self.paused && self.waiting.len() <= WAITING / 2 {
            if let Err(error) = consumer.resume() {
                tracing::warn!(%error, "cannot resume the dispatch partitions; trying again with the next range");
            } else {
                self.paused = false;
            }
        }
    }

    /// The consumer was joined again: what the old one handed out is never committed.
    pub(super) fn rejoined(&mut self) {
        self.watermarks = Watermarks::default();
        self.member += 1;
        self.paused = false;
        self.joined = Instant::now();
    }
}
