//! Results kept by reference: a `separate` task whose results are too many or too large for the
//! context leaves them in the store and puts this in the context instead:
//!
//! `{"$results": {"group": "<group id>", "task": "<task id>", "count": N}}`
//!
//! An `array` expansion may map over such a reference (`"array_mapping": {"item":
//! "context.<key>"}`): it has `count` instances, known without reading a result, and each range
//! of them reads only its own slice of the results ([`crate::Expansion::with_results`]).

use serde_json::{json, Value};

/// The key of a reference object.
pub const RESULTS_KEY: &str = "$results";

/// Where a task's results are kept, and how many there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsRef {
    /// The id of the task's group.
    pub group: String,
    /// The task's id.
    pub task: String,
    /// How many results: one per instance, in instance order (`null` where one failed).
    pub count: u64,
}

impl ResultsRef {
    /// The reference as the context holds it.
    pub fn to_value(&self) -> Value {
        json!({RESULTS_KEY: {"group": self.group, "task": self.task, "count": self.count}})
    }

    /// The reference `value` is, if it is one: an object of the one key `$results` holding
    /// `group`, `task` and `count`.
    pub fn from_value(value: &Value) -> Option<Self> {
        let object = value.as_object()?;
        if object.len() != 1 {
            return None;
        }
        let inner = object.get(RESULTS_KEY)?;
        Some(Self {
            group: inner.get("group")?.as_str()?.to_string(),
            task: inner.get("task")?.as_str()?.to_string(),
            count: inner.get("count")?.as_u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_reads_back_and_other_objects_are_not_one() {
        let reference = ResultsRef {
            group: "g".into(),
            task: "t".into(),
            count: 3,
        };
        let value = reference.to_value();
        assert_eq!(
            value,
            json!({"$results": {"group": "g", "task": "t", "count": 3}})
        );
        assert_eq!(ResultsRef::from_value(&value), Some(reference));
        assert_eq!(
            ResultsRef::from_value(&json!({"$results": {"task": "t"}})),
            None
        );
        assert_eq!(
            ResultsRef::from_value(
                &json!({"$results": {"group": "g", "task": "t", "count": 1}, "x": 1})
            ),
            None
        );
        assert_eq!(ResultsRef::from_value(&json!([1, 2])), None);
    }
}
