//! Output formats: how the results of a task's instances become the one value written to the
//! session context once every instance is done.
//!
//! Results are given in instance order; `None` stands for an instance without a result (it failed
//! and the group's failure policy let the task finish anyway).
//!
//! - `separate` (default): a list with one entry per instance, in instance order; `null` where an
//!   instance has no result. `context.<task>[i]` is instance `i`'s result.
//! - `merge`: one value folded from the results in instance order. Objects are merged key by key:
//!   nested objects merge recursively, lists under the same key are concatenated, any other value
//!   is replaced by the later instance's. List results are concatenated. Missing results are
//!   skipped. Mixing objects and lists (or scalars) is an error naming the first instance that
//!   does not fit.
//! - `single`: one summary object with aggregated metrics. Numeric results give
//!   `{"count", "sum", "min", "max", "mean"}`; object results give `"count"` plus, per top-level
//!   field, those statistics when every value of the field is a number, otherwise the field's
//!   distinct values in first-seen order; any other results give `{"count", "values"}` with the
//!   distinct values. `count` is the number of results aggregated.

use crate::path::type_name;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// How a task's instance results are combined into its context value (`output_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// One list entry per instance, in instance order (the default).
    #[default]
    Separate,
    /// Objects merged key by key, or lists concatenated, in instance order.
    Merge,
    /// The first instance's result alone.
    Single,
}

impl OutputFormat {
    /// The format named `name` in a session file, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "separate" => Some(Self::Separate),
            "merge" => Some(Self::Merge),
            "single" => Some(Self::Single),
            _ => None,
        }
    }

    /// The name a session file uses for this format.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Separate => "separate",
            Self::Merge => "merge",
            Self::Single => "single",
        }
    }

    /// Combines instance results, given in instance order, into the task's context value.
    pub fn combine<I>(self, results: I) -> Result<Value, CombineError>
    where
        I: IntoIterator<Item = Option<Value>>,
    {
        match self {
            Self::Separate => Ok(Value::Array(
                results.into_iter().map(Option::unwrap_or_default).collect(),
            )),
            Self::Merge => merge(results),
            Self::Single => Ok(single(results)),
        }
    }
}

/// Results that cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot merge results: instance {instance} returned {found} where the earlier results were {expected}")]
pub struct CombineError {
    /// The instance whose result does not fit.
    pub instance: u64,
    /// The JSON type of the results before it.
    pub expected: &'static str,
    /// The JSON type it returned.
    pub found: &'static str,
}

fn merge<I: IntoIterator<Item = Option<Value>>>(results: I) -> Result<Value, CombineError> {
    let mut merged: Option<Value> = None;
    for (instance, result) in results.into_iter().enumerate() {
        let Some(result) = result else { continue };
        let instance = instance as u64;
        merged = Some(match (merged, result) {
            (None, first @ (Value::Object(_) | Value::Array(_))) => first,
            (Some(Value::Object(mut into)), Value::Object(from)) => {
                merge_objects(&mut into, from);
                Value::Object(into)
            }
            (Some(Value::Array(mut into)), Value::Array(from)) => {
                into.extend(from);
                Value::Array(into)
            }
            (expected, found) => {
                return Err(CombineError {
                    instance,
                    expected: expected.as_ref().map_or("nothing yet", |e| plural_type(e)),
                    found: type_name(&found),
                })
            }
        });
    }
    Ok(merged.unwrap_or_else(|| Value::Object(Map::new())))
}

fn plural_type(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "objects",
        _ => "lists",
    }
}

fn merge_objects(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(incoming)) => {
                merge_objects(existing, incoming)
            }
            (Some(Value::Array(existing)), Value::Array(incoming)) => existing.extend(incoming),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Running statistics over numbers, and the distinct values in case a non-number shows up.
#[derive(Debug, Default)]
struct Column {
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    distinct: Vec<Value>,
    /// Serialized distinct values: `Value` is not `Hash`, and a linear scan would be quadratic.
    seen: HashSet<String>,
    numeric: bool,
}

impl Column {
    fn new() -> Self {
        Self {
            numeric: true,
            ..Self::default()
        }
    }

    fn push(&mut self, value: Value) {
        self.count += 1;
        if self.numeric {
            if let Some(x) = value.as_f64() {
                self.sum += x;
                self.min = Some(self.min.map_or(x, |m| m.min(x)));
                self.max = Some(self.max.map_or(x, |m| m.max(x)));
            } else {
                self.numeric = false;
            }
        }
        if self.seen.insert(value.to_string()) {
            self.distinct.push(value);
        }
    }

    fn stats(&self) -> Map<String, Value> {
        let mut stats = Map::new();
        stats.insert("count".into(), Value::from(self.count));
        stats.insert("sum".into(), number(self.sum));
        stats.insert("min".into(), self.min.map_or(Value::Null, number));
        stats.insert("max".into(), self.max.map_or(Value::Null, number));
        let mean = if self.count == 0 {
            Value::Null
        } else {
            number(self.sum / self.count as f64)
        };
        stats.insert("mean".into(), mean);
        stats
    }

    fn summary(self) -> Value {
        if self.numeric && self.count > 0 {
            Value::Object(self.stats())
        } else {
            Value::Array(self.distinct)
        }
    }
}

/// Integral floats print as integers (`6`, not `6.0`) so sums of integers read naturally.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

fn single<I: IntoIterator<Item = Option<Value>>>(results: I) -> Value {
    let mut count = 0u64;
    let mut whole = Column::new();
    let mut fields: Vec<(String, Column)> = Vec::new();
    let mut all_objects = true;
    for result in results.into_iter().flatten() {
        count += 1;
        match &result {
            Value::Object(map) if all_objects => {
                for (key, value) in map {
                    match fields.iter_mut().find(|(name, _)| name == key) {
                        Some((_, column)) => column.push(value.clone()),
                        None => {
                            let mut column = Column::new();
                            column.push(value.clone());
                            fields.push((key.clone(), column));
                        }
                    }
                }
            }
            Value::Object(_) => {}
            _ => all_objects = false,
        }
        whole.push(result);
    }
    let mut summary = Map::new();
    if all_objects && count > 0 {
        summary.insert("count".into(), Value::from(count));
        for (name, column) in fields {
            summary.insert(name, column.summary());
        }
    } else if whole.numeric && count > 0 {
        summary = whole.stats();
    } else {
        summary.insert("count".into(), Value::from(count));
        summary.insert("values".into(), Value::Array(whole.distinct));
    }
    Value::Object(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn some(values: Vec<Value>) -> Vec<Option<Value>> {
        values.into_iter().map(Some).collect()
    }

    #[test]
    fn separate_keeps_instance_order_and_marks_missing_results() {
        let combined = OutputFormat::Separate
            .combine(vec![Some(json!(1)), None, Some(json!({"a": 2}))])
            .unwrap();
        assert_eq!(combined, json!([1, null, {"a": 2}]));
    }

    #[test]
    fn merge_folds_objects_deeply_and_concatenates_lists() {
        let combined = OutputFormat::Merge
            .combine(some(vec![
                json!({"summary": {"us": 1}, "items": [1], "score": 1}),
                json!({"summary": {"eu": 2}, "items": [2, 3], "score": 5}),
            ]))
            .unwrap();
        assert_eq!(
            combined,
            json!({"summary": {"us": 1, "eu": 2}, "items": [1, 2, 3], "score": 5})
        );
        let lists = OutputFormat::Merge
            .combine(vec![Some(json!([1])), None, Some(json!([2]))])
            .unwrap();
        assert_eq!(lists, json!([1, 2]));
        assert_eq!(OutputFormat::Merge.combine(vec![None]).unwrap(), json!({}));
    }

    #[test]
    fn merge_rejects_mixed_results_naming_the_instance() {
        let error = OutputFormat::Merge
            .combine(some(vec![json!({"a": 1}), json!({"b": 1}), json!("text")]))
            .unwrap_err();
        assert_eq!(error.instance, 2);
        assert_eq!(
            error.to_string(),
            "cannot merge results: instance 2 returned string where the earlier results were objects"
        );
        assert!(OutputFormat::Merge.combine(some(vec![json!(1)])).is_err());
    }

    #[test]
    fn single_aggregates_numbers() {
        let combined = OutputFormat::Single
            .combine(some(vec![json!(1), json!(2), json!(3)]))
            .unwrap();
        assert_eq!(
            combined,
            json!({"count": 3, "sum": 6, "min": 1, "max": 3, "mean": 2})
        );
    }

    #[test]
    fn single_aggregates_object_fields() {
        let combined = OutputFormat::Single
            .combine(vec![
                Some(json!({"score": 0.5, "label": "a"})),
                None,
                Some(json!({"score": 1.5, "label": "b"})),
                Some(json!({"score": 1, "label": "a"})),
            ])
            .unwrap();
        assert_eq!(
            combined,
            json!({
                "count": 3,
                "score": {"count": 3, "sum": 3, "min": 0.5, "max": 1.5, "mean": 1},
                "label": ["a", "b"]
            })
        );
    }

    #[test]
    fn single_keeps_objects_seen_before_a_scalar() {
        let combined = OutputFormat::Single
            .combine(some(vec![json!({"a": 1}), json!(2), json!({"a": 1})]))
            .unwrap();
        assert_eq!(combined, json!({"count": 3, "values": [{"a": 1}, 2]}));
    }

    #[test]
    fn single_lists_distinct_values_of_anything_else() {
        let combined = OutputFormat::Single
            .combine(some(vec![json!("x"), json!("y"), json!("x")]))
            .unwrap();
        assert_eq!(combined, json!({"count": 3, "values": ["x", "y"]}));
        assert_eq!(
            OutputFormat::Single.combine(Vec::new()).unwrap(),
            json!({"count": 0, "values": []})
        );
    }
}
