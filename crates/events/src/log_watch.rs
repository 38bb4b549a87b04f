//! Noticing that a broker lost a topic's log: a partition's end moving backwards, or a message
//! appended after one already read sitting at or before its offset.

use std::collections::{BTreeMap, BTreeSet};

/// Where each partition of one topic was last seen to end (one past its last offset), from the
/// broker's high watermarks and from offsets published or read. A log only grows, so a reading
/// below what was seen means the broker lost messages: it came back without its data, or a
/// replica missing the tail was made leader. One low reading can be a new leader's high
/// watermark catching up; a second reading confirms it.
#[derive(Debug, Default, Clone)]
pub struct LogWatch {
    seen: BTreeMap<i32, u64>,
    /// The partitions of the last reading that were below what was seen, if any.
    suspect: Option<String>,
    /// The offsets last given to this client's messages, per partition (see
    /// [`LogWatch::landed`]).
    given: BTreeMap<i32, BTreeSet<u64>>,
    /// The last message read per partition that the broker stamped (`LogAppendTime`): its
    /// offset and time.
    stamped: BTreeMap<i32, (u64, i64)>,
    /// `stamped` as it was at the last reading, to be checked at the next one (see
    /// [`LogWatch::checks`]).
    checkpoints: BTreeMap<i32, (u64, i64)>,
}

/// Offsets kept per partition to tell an offset given twice.
const GIVEN: usize = 4096;

/// What a reading of the partitions' ends says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Every partition ends at or past where it was seen to end.
    Intact,
    /// Some partition ends before where it was seen to; read again shortly to confirm.
    Suspect,
    /// Two readings in a row were low: messages were lost. Says which partitions, where they end
    /// now and where they ended. What was seen is forgotten: the log starts over from here.
    Lost(String),
}

impl LogWatch {
    /// Notes that `partition` holds at least `end` messages (an offset `end - 1` was published
    /// or read).
    pub fn observe(&mut self, partition: i32, end: u64) {
        let seen = self.seen.entry(partition).or_default();
        *seen = (*seen).max(end);
    }

    /// Notes that a message this client published landed at `offset` of `partition`; says the
    /// log was lost when that very offset was given to one of its messages before (offsets are
    /// never given twice in one log, so the broker started it over), and forgets what was seen.
    /// Publishes run concurrently and land in any order, so an offset below one seen says
    /// nothing by itself; the last `GIVEN` offsets per partition are kept to compare.
    pub fn landed(&mut self, partition: i32, offset: u64) -> Option<String> {
        let given = self.given.entry(partition).or_default();
        if !given.insert(offset) {
            let last = given.last().copied().unwrap_or(offset);
            self.seen = BTreeMap::from([(partition, offset + 1)]);
            self.given = BTreeMap::from([(partition, BTreeSet::from([offset]))]);
            self.suspect = None;
            return Some(format!(
                "partition {partition} gave offset {offset} again (offsets up to {last} were given before)"
            ));
        }
        if given.len() > GIVEN {
            given.pop_first();
        }
        self.observe(partition, offset + 1);
        None
    }

    /// Notes a message read at `offset` of `partition` that the broker stamped with its append
    /// time, `appended_ms`. The broker stamps in append order, so the log holds nothing stamped
    /// later at or before that offset, however it grows.
    ///
    /// The first message read from a partition is a checkpoint at once: one read between two
    /// readings (the broker lost right after) is checked at the next reading, not only at the
    /// one after it. Checking a message is never wrong in an intact log; only a message read
    /// from the new log would hide a loss, and one read before any reading of its partition
    /// hides nothing an older checkpoint would have told.
    pub fn stamped(&mut self, partition: i32, offset: u64, appended_ms: i64) {
        self.stamped.insert(partition, (offset, appended_ms));
        self.checkpoints
            .entry(partition)
            .or_insert((offset, appended_ms));
        self.observe(partition, offset + 1);
    }

    /// What to ask the broker at a reading, besides the ends: per partition, the first offset
    /// stamped after the last message read there up to the previous reading (a time in ms). A
    /// log written again since (the broker came back without its data and took new messages)
    /// has a later message at or before it, even once it grew past every end seen and this
    /// client read on; the ends alone miss that.
    pub fn checks(&self) -> Vec<(i32, i64)> {
        self.checkpoints
            .iter()
            .map(|(&partition, &(_, appended_ms))| (partition, appended_ms + 1))
            .collect()
    }

    /// Whether anything was seen yet.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Takes a reading of every partition's end, as the broker answers it now; a partition the
    /// broker does not list (the topic is gone) ends at 0.
    pub fn read(&mut self, ends: &[(i32, u64)]) -> Reading {
        self.read_with(ends, Some(&[]))
    }

    /// Takes a reading of the ends, and of `after`: the answers to [`LogWatch::checks`], the
    /// first offset stamped after each checkpoint's time (`None` for a partition: nothing is).
    /// One at or before its checkpoint's offset says the log was written again: lost, at once
    /// (it stays so, but the next checks are of later messages). Without `after` (the broker
    /// did not answer them) the checkpoints stay for the next reading.
    pub fn read_with(
        &mut self,
        ends: &[(i32, u64)],
        after: Option<&[(i32, Option<u64>)]>,
    ) -> Reading {
        let rewritten: Vec<String> = after
            .unwrap_or_default()
            .iter()
            .filter_map(|&(partition, first)| {
                let (offset, _) = self.checkpoints.get(&partition)?;
                let first = first.filter(|first| first <= offset)?;
                Some(format!("partition {partition} holds a message appended after the one read at offset {offset}, at offset {first}"))
            })
            .collect();
        if !rewritten.is_empty() {
            *self = Self {
                seen: ends.iter().copied().collect(),
                ..Self::default()
            };
            return Reading::Lost(rewritten.join(", "));
        }
        if after.is_some() {
            self.checkpoints = self.stamped.clone();
        }
        let now: BTreeMap<i32, u64> = ends.iter().copied().collect();
        let low: Vec<String> = self
            .seen
            .iter()
            .filter_map(|(&partition, &seen)| {
                let end = now.get(&partition).copied().unwrap_or(0);
                (end < seen).then(|| format!("partition {partition} ends at {end}, seen at {seen}"))
            })
            .collect();
        if low.is_empty() {
            self.suspect = None;
            for (partition, end) in now {
                self.observe(partition, end);
            }
            return Reading::Intact;
        }
        let detail = low.join(", ");
        match self.suspect.take() {
            None => {
                self.suspect = Some(detail);
                Reading::Suspect
            }
            Some(_) => {
                *self = Self {
                    seen: now,
                    ..Self::default()
                };
                Reading::Lost(detail)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{LogWatch, Reading};

    #[test]
    fn a_log_that_grows_is_intact() {
        let mut watch = LogWatch::default();
        watch.observe(0, 5);
        assert_eq!(watch.read(&[(0, 5), (1, 2)]), Reading::Intact);
        assert_eq!(watch.read(&[(0, 9), (1, 2)]), Reading::Intact);
    }

    #[test]
    fn one_low_reading_is_suspect_and_a_second_is_a_loss() {
        let mut watch = LogWatch::default();
        watch.observe(0, 50);
        watch.observe(3, 7);
        assert_eq!(watch.read(&[(0, 50), (3, 7)]), Reading::Intact);
        // A new leader's high watermark catching up: low once, then back.
        assert_eq!(watch.read(&[(0, 48), (3, 7)]), Reading::Suspect);
        assert_eq!(watch.read(&[(0, 50), (3, 7)]), Reading::Intact);
        // The topic gone (the broker lists none of its partitions), then recreated small.
        assert_eq!(watch.read(&[]), Reading::Suspect);
        assert_eq!(
            watch.read(&[(0, 2), (3, 0)]),
            Reading::Lost(
                "partition 0 ends at 2, seen at 50, partition 3 ends at 0, seen at 7".into()
            )
        );
        // Forgotten: the new log is watched from where it is.
        assert_eq!(watch.read(&[(0, 2), (3, 0)]), Reading::Intact);
        assert_eq!(watch.read(&[(0, 1)]), Reading::Suspect);
    }

    #[test]
    fn a_message_landing_at_an_offset_given_before_is_a_loss() {
        let mut watch = LogWatch::default();
        assert_eq!(watch.landed(2, 1), None);
        // Concurrent publishes land in any order: a lower offset is no loss.
        assert_eq!(watch.landed(2, 0), None);
        assert_eq!(watch.landed(5, 0), None);
        assert_eq!(
            watch.landed(2, 0),
            Some("partition 2 gave offset 0 again (offsets up to 1 were given before)".into())
        );
        // Forgotten: only the new message is known.
        assert_eq!(watch.read(&[(2, 1)]), Reading::Intact);
        assert_eq!(watch.landed(5, 0), None);
    }

    #[test]
    fn a_log_written_again_past_every_end_seen_is_a_loss() {
        let mut watch = LogWatch::default();
        watch.stamped(1, 0, 1_000);
        assert_eq!(
            watch.checks(),
            [(1, 1_001)],
            "the first read is checked at once"
        );
        assert_eq!(watch.read_with(&[(1, 1)], Some(&[])), Reading::Intact);
        assert_eq!(watch.checks(), [(1, 1_001)]);
        // Intact: nothing stamped later, or only past the message read.
        assert_eq!(
            watch.read_with(&[(1, 1)], Some(&[(1, None)])),
            Reading::Intact
        );
        watch.stamped(1, 3, 1_500);
        assert_eq!(
            watch.read_with(&[(1, 4)], Some(&[(1, Some(1))])),
            Reading::Intact
        );
        assert_eq!(watch.checks(), [(1, 1_501)]);
        // The broker came back empty and took five messages; this client read two of them. A
        // reading whose checks the broker did not answer keeps the checkpoints.
        watch.stamped(1, 4, 9_000);
        assert_eq!(watch.read_with(&[(1, 5)], None), Reading::Intact);
        assert_eq!(watch.checks(), [(1, 1_501)]);
        assert_eq!(
            watch.read_with(&[(1, 5)], Some(&[(1, Some(0))])),
            Reading::Lost(
                "partition 1 holds a message appended after the one read at offset 3, at offset 0"
                    .into()
            )
        );
        // Forgotten: the new log is watched from where it is.
        assert_eq!(watch.checks(), []);
        assert_eq!(watch.read_with(&[(1, 5)], Some(&[])), Reading::Intact);
    }

    /// The case the fault suite found: the first message of a partition read, the broker lost
    /// before the next reading, and a message landing at offset 0 of the new log before the
    /// consumer could see the partition empty.
    #[test]
    fn a_partition_read_once_before_the_log_was_lost_is_checked() {
        let mut watch = LogWatch::default();
        assert_eq!(watch.read_with(&[(4, 0)], Some(&[])), Reading::Intact);
        watch.stamped(4, 0, 2_000);
        // The broker out of reach: no answer, nothing decided.
        assert_eq!(watch.read_with(&[(4, 1)], None), Reading::Intact);
        assert_eq!(watch.checks(), [(4, 2_001)]);
        assert_eq!(
            watch.read_with(&[(4, 1)], Some(&[(4, Some(0))])),
            Reading::Lost(
                "partition 4 holds a message appended after the one read at offset 0, at offset 0"
                    .into()
            )
        );
    }

    #[test]
    fn nothing_seen_is_never_lost() {
        let mut watch = LogWatch::default();
        assert!(watch.is_empty());
        assert_eq!(watch.read(&[]), Reading::Intact);
        assert_eq!(watch.read(&[]), Reading::Intact);
    }
}
