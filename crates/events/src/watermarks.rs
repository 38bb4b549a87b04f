//! Commit positions for consumers that finish messages out of order.

use crate::broker::{Message, Position};
use std::collections::{BTreeMap, HashMap};

/// Per partition, the messages taken and not yet finished, so an offset is committed only when
/// it and every message before it are done: processing out of order never commits past
/// unfinished work, which a crash would then lose instead of redelivering.
#[derive(Debug, Default)]
pub struct Watermarks {
    /// Offset -> how many takes of it are still going (a message delivered again after a
    /// rebalance can be taken twice).
    pending: HashMap<(String, i32), BTreeMap<u64, usize>>,
}

impl Watermarks {
    /// Notes that the message at `at` is being processed.
    pub fn taken(&mut self, at: &Position) {
        *self
            .pending
            .entry((at.topic.clone(), at.partition))
            .or_default()
            .entry(at.offset)
            .or_default() += 1;
    }

    /// Marks one take of the message at `at` done; returns the message to commit when the
    /// partition's watermark moved.
    pub fn done(&mut self, at: &Position) -> Option<Message> {
        let pending = self.pending.get_mut(&(at.topic.clone(), at.partition))?;
        if let Some(runs) = pending.get_mut(&at.offset) {
            *runs = runs.saturating_sub(1);
        }
        let mut committed = None;
        while let Some(entry) = pending.first_entry() {
            if *entry.get() > 0 {
                break;
            }
            committed = Some(entry.remove_entry().0);
        }
        committed.map(|offset| Message {
            topic: at.topic.clone(),
            key: String::new(),
            payload: Vec::new(),
            offset,
            partition: at.partition,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Position, Watermarks};

    fn at(partition: i32, offset: u64) -> Position {
        Position {
            topic: "intake".into(),
            partition,
            offset,
        }
    }

    #[test]
    fn an_offset_is_committed_only_when_it_and_every_earlier_action_are_done() {
        let mut marks = Watermarks::default();
        for offset in [4, 5, 6] {
            marks.taken(&at(0, offset));
        }
        marks.taken(&at(1, 9));
        // 5 finishes first: 4 is still running, nothing moves.
        assert!(marks.done(&at(0, 5)).is_none());
        // Another partition moves on its own.
        assert_eq!(marks.done(&at(1, 9)).map(|m| m.offset), Some(9));
        // 4 finishes: 4 and 5 are done, the watermark moves past 5.
        assert_eq!(marks.done(&at(0, 4)).map(|m| m.offset), Some(5));
        // Delivered again after a rebalance: both runs must finish.
        marks.taken(&at(0, 6));
        assert!(marks.done(&at(0, 6)).is_none());
        let committed = marks.done(&at(0, 6)).expect("moved");
        assert_eq!((committed.partition, committed.offset), (0, 6));
    }
}
