//! The messages that cross process boundaries, versioned: work dispatched to workers, instance
//! outcomes, the notices that wake the coordinator, and control messages.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskgroup::{Failure, FailureKind};

/// Bumped when a message changes incompatibly; a worker refuses versions it does not know.
pub const VERSION: u32 = 1;

/// Identifies a task within a session: group and task by index in the session file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    /// The group, by index in the session file.
    pub group: usize,
    /// The task, by index in its group.
    pub task: usize,
}

/// A range of one task's instances to execute. Never one message per instance: a million
/// instances are a few hundred of these, and each worker expands its own slice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    /// The message format's version; a worker refuses others.
    pub v: u32,
    /// The session id.
    pub session: String,
    /// Which run of the session id: work of an earlier run, delivered late, is told apart.
    #[serde(default)]
    pub run: String,
    /// The claim of the coordinator that dispatched it (its lease's token; empty when it runs
    /// unleased). A run resumed by another claim keeps the run's name, so this is what a cancel
    /// is scoped by: a coordinator that lost the session cancels only its own work.
    #[serde(default)]
    pub claim: String,
    /// The task whose instances these are.
    pub task: TaskRef,
    /// The first instance of the range.
    pub start: u64,
    /// One past the last instance of the range.
    pub end: u64,
    /// The attempt every instance of the range runs as.
    pub attempt: u32,
}

impl WorkItem {
    /// The dispatch message; an encoding failure is an error, never an empty message.
    pub fn encode(&self) -> crate::Result<Vec<u8>> {
        crate::encode("a work item", self)
    }

    /// Decodes a dispatch message; the error says what is wrong, for the dead-letter record.
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        if let Some(reason) = crate::broker::oversized(payload.len()) {
            return Err(reason);
        }
        let item: Self =
            serde_json::from_slice(payload).map_err(|e| format!("not a work item: {e}"))?;
        if item.v != VERSION {
            return Err(format!(
                "work item version {} is not supported (this build speaks {VERSION})",
                item.v
            ));
        }
        if item.start > item.end || item.attempt == 0 {
            return Err(format!(
                "work item range {}..{} attempt {} is invalid",
                item.start, item.end, item.attempt
            ));
        }
        Ok(item)
    }
}

/// Everything a worker needs to expand and execute a task's instances, stored once per task
/// when the coordinator plans it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The run of the session that planned the task (see [`WorkItem::run`]).
    #[serde(default)]
    pub run: String,
    /// The task's id.
    pub task_id: String,
    /// Its group's id.
    pub group_id: String,
    /// The executor that runs each instance.
    pub executor: String,
    /// The task input, as in the session file.
    pub input: Value,
    /// A task-level `expansion_config`.
    pub expansion_config: Option<Value>,
    /// The part of the context the task was planned against that its expansion reads: the
    /// top-level keys it looks up, so the record does not grow with unrelated context values.
    pub context: Value,
    /// The deadline of each attempt.
    pub timeout_ms: Option<u64>,
    /// At most this many instances at once per worker.
    pub concurrency: Option<u32>,
    /// The instance count the coordinator planned; a worker refuses a range beyond it.
    pub instances: u64,
    /// The memoization key's template, when the task memoizes (`memoize.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo_key: Option<String>,
    /// How long a memoized success is used, in seconds; for ever when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo_ttl_s: Option<u64>,
    /// The tasks of its group it depends on instance by instance, in `depends_on` order: a
    /// worker reads the outcome of the same instance of each, for `{{upstream.<task>}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<Upstream>,
    /// For `"executor": "agent"`: the agent type that claims its instances, and how long a
    /// claim lasts. Workers offer the instances to agents instead of running them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentTask>,
    /// The task of the session whose results (kept by reference) its expansion maps over: a
    /// worker reads the slice its range needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maps_results_of: Option<TaskRef>,
}

/// Who does a task's instances, when agents do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTask {
    /// The agent type.
    #[serde(rename = "type")]
    pub kind: String,
    /// A claim not completed within this long is released and counts as an attempt.
    pub claim_timeout_ms: u64,
}

/// A task another depends on instance by instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// Its index in the group.
    pub task: usize,
    /// Its id, as templates name it.
    pub id: String,
}

/// The outcome of one attempt of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The instance, by index in the task.
    pub instance: u64,
    /// The attempt, from 1.
    pub attempt: u32,
    /// How it ended.
    pub status: Status,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "snake_case",
    tag = "status",
    content = "value",
    from = "StatusRecord"
)]
pub enum Status {
    /// Succeeded with this result.
    Succeeded(Value),
    /// Succeeded with a result too large to keep in the outcome: it is the blob of that name.
    Stored(String),
    /// Not executed: a memoized success of the same key (from an earlier session) is its result.
    Cached(Value),
    /// Failed: how (its kind decides whether it is retried), and its message.
    Failed(Failure),
}

impl Status {
    /// How a failed attempt failed; `None` for a success. The form a notice and the machine's
    /// `Event::outcome` take.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::Succeeded(_) | Self::Stored(_) | Self::Cached(_) => None,
            Self::Failed(failure) => Some(failure),
        }
    }
}

/// A stored [`Status`] as it is read: the form written now, and the forms of outcomes stored
/// by earlier versions (a failure as its message, its kind in the variant), so a store or state
/// file they wrote is read whole.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "value")]
enum StatusRecord {
    Succeeded(Value),
    Stored(String),
    Cached(Value),
    Failed(FailureRecord),
    FailedPermanently(String),
    TimedOut(String),
}

/// A failure as it is read: with its kind, or (written by an earlier version) its message alone.
#[derive(Deserialize)]
#[serde(untagged)]
enum FailureRecord {
    Typed(Failure),
    Message(String),
}

impl From<StatusRecord> for Status {
    fn from(record: StatusRecord) -> Self {
        match record {
            StatusRecord::Succeeded(value) => Self::Succeeded(value),
            StatusRecord::Stored(blob) => Self::Stored(blob),
            StatusRecord::Cached(value) => Self::Cached(value),
            StatusRecord::Failed(FailureRecord::Typed(failure)) => Self::Failed(failure),
            StatusRecord::Failed(FailureRecord::Message(message)) => {
                Self::Failed(Failure::error(message))
            }
            StatusRecord::FailedPermanently(message) => Self::Failed(Failure::permanent(message)),
            StatusRecord::TimedOut(message) => {
                Self::Failed(Failure::new(FailureKind::Timeout, message))
            }
        }
    }
}

impl Outcome {
    /// Whether the attempt succeeded (its result inline or in a blob).
    pub fn succeeded(&self) -> bool {
        matches!(
            self.status,
            Status::Succeeded(_) | Status::Stored(_) | Status::Cached(_)
        )
    }
}

/// What `agency:results` carries when a session's result is stored: which session and run it
/// is, and how it ended. Never the result itself, which can be larger than a subscriber's
/// pub/sub output buffer (Redis drops a subscriber past it); it is read from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The session id.
    pub session_id: String,
    /// The run the result is of (distributed only; see `SessionResult::run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// How the session ended: `completed`, `partial` or `failed`.
    pub status: String,
}

impl Announcement {
    /// The message; an encoding failure is an error, never an empty message.
    pub fn encode(&self) -> crate::Result<Vec<u8>> {
        crate::encode("a result announcement", self)
    }
}

/// Announces outcomes already written to the store. Only a wake-up: whoever misses it can read
/// the same facts from the store. Results are not repeated here, only what the coordinator's
/// state machine needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// The session id.
    pub session: String,
    /// The task the outcomes belong to.
    pub task: TaskRef,
    /// Accepted successes as `(start, end, attempt)`: instances `start..end`, all of that
    /// attempt. Instances mostly finish in order, so a batch of a thousand is usually one entry.
    pub succeeded: Vec<(u64, u64, u32)>,
    /// `(instance, attempt, failure)` of accepted failures.
    pub failed: Vec<(u64, u32, Failure)>,
}

impl Notice {
    /// A notice with no outcomes yet.
    pub fn new(session: &str, task: TaskRef) -> Self {
        Self {
            session: session.to_string(),
            task,
            succeeded: Vec::new(),
            failed: Vec::new(),
        }
    }

    /// Adds one success, extending the last range when it continues it.
    pub fn add_success(&mut self, instance: u64, attempt: u32) {
        match self.succeeded.last_mut() {
            Some((_, end, last)) if *end == instance && *last == attempt => *end += 1,
            _ => self.succeeded.push((instance, instance + 1, attempt)),
        }
    }

    /// Adds one failure.
    pub fn add_failure(&mut self, instance: u64, attempt: u32, failure: &Failure) {
        self.failed.push((instance, attempt, failure.clone()));
    }

    /// Whether it announces nothing.
    pub fn is_empty(&self) -> bool {
        self.succeeded.is_empty() && self.failed.is_empty()
    }

    /// Every success as `(instance, attempt)`.
    pub fn successes(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.succeeded
            .iter()
            .flat_map(|&(start, end, attempt)| (start..end).map(move |i| (i, attempt)))
    }
}

/// Control messages from the coordinator to workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "control")]
pub enum Control {
    /// Stop the group's running instances and drop its queued work.
    CancelGroup {
        /// The session id.
        session: String,
        /// The run the group belongs to; a later run of the same id is not touched.
        #[serde(default)]
        run: String,
        /// The claim whose work is cancelled (see [`WorkItem::claim`]).
        #[serde(default)]
        claim: String,
        /// The group, by index in the session file.
        group: usize,
    },
    /// Start no more instances of the run: those running finish and are recorded, ranges not
    /// started yet are dropped (the coordinator dispatches what is left when the run resumes).
    PauseRun {
        /// The session id.
        session: String,
        /// The run paused.
        run: String,
    },
    /// Start instances of the run again (the coordinator dispatches what is left of it).
    ResumeRun {
        /// The session id.
        session: String,
        /// The run resumed.
        run: String,
    },
    /// The broker lost messages of `topic` (a coordinator saw its partitions end before what it
    /// had published): consumers of it subscribe again, since librdkafka does not follow a log
    /// made again. The coordinator dispatches its unsettled work again after sending this.
    LogLost {
        /// The topic, qualified ([`crate::Broker::qualified`]): deployments sharing a store
        /// share this channel.
        topic: String,
        /// Which partitions end where, against where they ended.
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn work_items_round_trip_and_bad_ones_are_explained() {
        let item = WorkItem {
            v: VERSION,
            session: "s".into(),
            run: "agency_action/0/7".into(),
            claim: "c1".into(),
            task: TaskRef { group: 1, task: 2 },
            start: 0,
            end: 10,
            attempt: 1,
        };
        assert_eq!(
            WorkItem::decode(&item.encode().expect("encodes")),
            Ok(item.clone())
        );
        assert!(WorkItem::decode(b"{")
            .unwrap_err()
            .starts_with("not a work item"));
        let future = WorkItem {
            v: 9,
            ..item.clone()
        };
        assert!(WorkItem::decode(&future.encode().expect("encodes"))
            .unwrap_err()
            .contains("version 9 is not supported"));
        let backwards = WorkItem {
            start: 5,
            end: 1,
            ..item
        };
        assert!(WorkItem::decode(&backwards.encode().expect("encodes"))
            .unwrap_err()
            .contains("invalid"));
    }

    #[test]
    fn notices_compress_consecutive_successes_into_ranges() {
        let mut notice = Notice::new("s", TaskRef { group: 0, task: 0 });
        for (instance, attempt) in [(0, 1), (1, 1), (2, 1), (5, 1), (6, 2), (7, 2)] {
            notice.add_success(instance, attempt);
        }
        assert_eq!(notice.succeeded, vec![(0, 3, 1), (5, 6, 1), (6, 8, 2)]);
        let all: Vec<(u64, u32)> = notice.successes().collect();
        assert_eq!(all, vec![(0, 1), (1, 1), (2, 1), (5, 1), (6, 2), (7, 2)]);
    }

    #[test]
    fn outcomes_serialize_with_a_status_tag() {
        let outcome = Outcome {
            instance: 3,
            attempt: 1,
            status: Status::Succeeded(json!({"a": 1})),
        };
        assert_eq!(
            serde_json::to_value(&outcome).unwrap(),
            json!({"instance": 3, "attempt": 1, "status": {"status": "succeeded", "value": {"a": 1}}})
        );
    }

    #[test]
    fn a_failure_is_stored_with_its_kind_and_outcomes_of_earlier_versions_are_read_whole() {
        let exit = Failure::exit("sh", 3, "quota");
        let outcome = Outcome {
            instance: 1,
            attempt: 2,
            status: Status::Failed(exit.clone()),
        };
        let stored = serde_json::to_value(&outcome).unwrap();
        assert_eq!(
            stored["status"],
            json!({"status": "failed", "value": {"kind": "exit", "code": 3, "message": "`sh` exited with code 3: quota"}})
        );
        assert_eq!(serde_json::from_value::<Outcome>(stored).unwrap(), outcome);
        let earlier = |status: Value| {
            let outcome = json!({"instance": 0, "attempt": 1, "status": status});
            let outcome: Outcome = serde_json::from_value(outcome).unwrap();
            outcome.status.failure().cloned()
        };
        assert_eq!(
            earlier(json!({"status": "failed", "value": "boom"})),
            Some(Failure::error("boom"))
        );
        assert_eq!(
            earlier(json!({"status": "failed_permanently", "value": "bad input"})),
            Some(Failure::permanent("bad input"))
        );
        assert_eq!(
            earlier(json!({"status": "timed_out", "value": "timed out after 5 ms"})),
            Some(Failure::new(FailureKind::Timeout, "timed out after 5 ms"))
        );
        let mut notice = Notice::new("s", TaskRef { group: 0, task: 1 });
        notice.add_failure(4, 1, &exit);
        let encoded = serde_json::to_vec(&notice).unwrap();
        let decoded: Notice = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(decoded.failed, vec![(4, 1, exit)]);
    }
}
