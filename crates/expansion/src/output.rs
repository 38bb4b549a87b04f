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
//!   distinct values. `count` is the number of results aggregated; a sum and a mean are rounded
//!   to 15 significant digits, so adding decimals shows no binary noise. At most [`DISTINCT_LIMIT`]
//!   distinct values are listed per field (the first ones seen); the statistics cover every
//!   result.
//!
//! [`Combiner`] folds results one at a time, so `merge` and `single` hold only what they have
//! folded so far (for `single`, the statistics and the distinct values), never every result.

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
        let mut combiner = self.combiner();
        for result in results {
            combiner.push(result)?;
        }
        Ok(combiner.finish())
    }

    /// A combiner to feed results to one at a time, in instance order.
    pub fn combiner(self) -> Combiner {
        Combiner {
            next: 0,
            state: match self {
                Self::Separate => Folding::Separate(Vec::new()),
                Self::Merge => Folding::Merge(None),
                Self::Single => Folding::Single(Box::default()),
            },
        }
    }
}

/// Results folded one at a time into a task's context value ([`OutputFormat::combiner`]).
#[derive(Debug)]
pub struct Combiner {
    /// The next result's instance.
    next: u64,
    state: Folding,
}

#[derive(Debug)]
enum Folding {
    Separate(Vec<Value>),
    Merge(Option<Value>),
    Single(Box<Summary>),
}

impl Combiner {
    /// Folds in the next instance's result (`None`: it has none).
    pub fn push(&mut self, result: Option<Value>) -> Result<(), CombineError> {
        let instance = self.next;
        self.next += 1;
        match &mut self.state {
            Folding::Separate(list) => list.push(result.unwrap_or_default()),
            Folding::Merge(merged) => {
                if let Some(result) = result {
                    merge_into(merged, result, instance)?;
                }
            }
            Folding::Single(summary) => {
                if let Some(result) = result {
                    summary.push(result);
                }
            }
        }
        Ok(())
    }

    /// The context value of everything pushed.
    pub fn finish(self) -> Value {
        match self.state {
            Folding::Separate(list) => Value::Array(list),
            Folding::Merge(merged) => merged.unwrap_or_else(|| Value::Object(Map::new())),
            Folding::Single(summary) => summary.finish(),
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

fn merge_into(
    merged: &mut Option<Value>,
    result: Value,
    instance: u64,
) -> Result<(), CombineError> {
    *merged = Some(match (merged.take(), result) {
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
    Ok(())
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

/// The most distinct values `single` lists per field (and for results that are not objects).
pub const DISTINCT_LIMIT: usize = 10_000;

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
        if self.distinct.len() < DISTINCT_LIMIT && self.seen.insert(value.to_string()) {
            self.distinct.push(value);
        }
    }

    fn stats(&self) -> Map<String, Value> {
        let mut stats = Map::new();
        stats.insert("count".into(), Value::from(self.count));
        stats.insert("sum".into(), number(significant(self.sum)));
        stats.insert("min".into(), self.min.map_or(Value::Null, number));
        stats.insert("max".into(), self.max.map_or(Value::Null, number));
        let mean = if self.count == 0 {
            Value::Null
        } else {
            number(significant(self.sum / self.count as f64))
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

/// Significant digits `single` gives a sum and a mean: as many as a double holds of any
/// decimal (15), so the binary noise of adding decimals goes (0.7 + 1.4 is 2.1, not
/// 2.0999999999999996) and every digit left is one the inputs carried.
const SIGNIFICANT: usize = 15;

/// `x` rounded to [`SIGNIFICANT`] digits (by the correctly rounded decimal formatting).
fn significant(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    format!("{x:.prec$e}", prec = SIGNIFICANT - 1)
        .parse()
        .unwrap_or(x)
}

/// Integral floats print as integers (`6`, not `6.0`) so sums of integers read naturally.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// `single`'s running summary: per top-level field while every result is an object, and of
/// the results whole.
#[derive(Debug)]
struct Summary {
    count: u64,
    whole: Column,
    fields: Vec<(String, Column)>,
    all_objects: bool,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            count: 0,
            whole: Column::new(),
            fields: Vec::new(),
            all_objects: true,
        }
    }
}

impl Summary {
    fn push(&mut self, result: Value) {
        self.count += 1;
        match &result {
            Value::Object(map) if self.all_objects => {
                for (key, value) in map {
                    match self.fields.iter_mut().find(|(name, _)| name == key) {
                        Some((_, column)) => column.push(value.clone()),
                        None => {
                            let mut column = Column::new();
                            column.push(value.clone());
                            self.fields.push((key.clone(), column));
                        }
                    }
                }
            }
            Value::Object(_) => {}
            _ => self.all_objects = false,
        }
        self.whole.push(result);
    }

    fn finish(self) -> Value {
        let count = self.count;
        let mut summary = Map::new();
        if self.all_objects && count > 0 {
            summary.insert("count".into(), Value::from(count));
            for (name, column) in self.fields {
                summary.insert(name, column.summary());
            }
        } else if self.whole.numeric && count > 0 {
            summary = self.whole.stats();
        } else {
            summary.insert("count".into(), Value::from(count));
            summary.insert("values".into(), Value::Array(self.whole.distinct));
        }
        Value::Object(summary)
    }
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
    fn single_sums_decimals_without_binary_noise() {
        // 0.7 + 1.4 is 2.0999999999999996 in binary floating point (issue 30, finding 13).
        let combined = OutputFormat::Single
            .combine(some(vec![json!(0.7), json!(1.4)]))
            .unwrap();
        assert_eq!(
            combined,
            json!({"count": 2, "sum": 2.1, "min": 0.7, "max": 1.4, "mean": 1.05})
        );
        let tenths = OutputFormat::Single
            .combine(some((0..10).map(|_| json!(0.1)).collect()))
            .unwrap();
        assert_eq!(tenths["sum"], json!(1));
        assert_eq!(significant(1.0 / 3.0), 0.333_333_333_333_333);
        assert_eq!(significant(123_456_789.123_456_78), 123_456_789.123_457);
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
    fn the_combiner_folds_as_combine_does_and_single_lists_a_bounded_number_of_values() {
        let results = vec![
            Some(json!({"a": [1]})),
            None,
            Some(json!({"a": [2], "b": 1})),
        ];
        let mut combiner = OutputFormat::Merge.combiner();
        for result in results.clone() {
            combiner.push(result).unwrap();
        }
        assert_eq!(
            combiner.finish(),
            OutputFormat::Merge.combine(results).unwrap()
        );
        let many = (0..DISTINCT_LIMIT + 5).map(|i| Some(json!(format!("v{i}"))));
        let summary = OutputFormat::Single.combine(many).unwrap();
        assert_eq!(summary["count"], json!(DISTINCT_LIMIT + 5));
        assert_eq!(summary["values"].as_array().unwrap().len(), DISTINCT_LIMIT);
        assert_eq!(summary["values"][0], json!("v0"));
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
