//! Predicates for `filter` and `conditions`: `">2021"`, `"!=EU"`, `["US", "EU"]`, `{"role": "==admin"}`.
//!
//! A string that starts with an operator (`>`, `>=`, `<`, `<=`, `==`, `!=`) compares against the rest,
//! which is read as JSON when it is valid JSON (`2021`, `true`, `"quoted"`) and as plain text otherwise.
//! A string without an operator, a number, a boolean or null is an equality test. A list is membership.
//! An object applies one predicate per field of an object value.

use crate::path::type_name;
use serde_json::Value;
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Predicate {
    Compare(Op, Value),
    In(Vec<Value>),
    Fields(Vec<(String, Predicate)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Op::Gt => ordering == Ordering::Greater,
            Op::Ge => ordering != Ordering::Less,
            Op::Lt => ordering == Ordering::Less,
            Op::Le => ordering != Ordering::Greater,
            Op::Eq => ordering == Ordering::Equal,
            Op::Ne => ordering != Ordering::Equal,
        }
    }
}

/// Longest operators first, so `>=` is not read as `>` followed by `=...`.
const OPERATORS: [(&str, Op); 6] = [
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("==", Op::Eq),
    ("!=", Op::Ne),
    (">", Op::Gt),
    ("<", Op::Lt),
];

impl Predicate {
    /// Parses a predicate; the error is a message for the caller to attach a path to.
    pub fn parse(spec: &Value) -> Result<Self, String> {
        match spec {
            Value::String(text) => Self::parse_text(text),
            Value::Array(items) => Ok(Predicate::In(items.clone())),
            Value::Object(fields) => fields
                .iter()
                .map(|(name, spec)| {
                    Self::parse(spec)
                        .map(|p| (name.clone(), p))
                        .map_err(|e| format!("field `{name}`: {e}"))
                })
                .collect::<Result<_, _>>()
                .map(Predicate::Fields),
            other => Ok(Predicate::Compare(Op::Eq, other.clone())),
        }
    }

    fn parse_text(text: &str) -> Result<Self, String> {
        let trimmed = text.trim_start();
        for (symbol, op) in OPERATORS {
            if let Some(rest) = trimmed.strip_prefix(symbol) {
                let rest = rest.trim();
                if rest.is_empty() {
                    return Err(format!("predicate `{text}` has an operator but no value"));
                }
                let operand = serde_json::from_str(rest).unwrap_or_else(|_| Value::from(rest));
                return Ok(Predicate::Compare(op, operand));
            }
        }
        Ok(Predicate::Compare(Op::Eq, Value::from(text)))
    }

    /// Whether `value` satisfies the predicate. Ordering values of different types is an error,
    /// not a silent `false`, so a typo such as `">2O21"` does not quietly filter everything out.
    pub fn matches(&self, value: &Value) -> Result<bool, String> {
        match self {
            Predicate::Compare(Op::Eq, operand) => Ok(json_eq(value, operand)),
            Predicate::Compare(Op::Ne, operand) => Ok(!json_eq(value, operand)),
            Predicate::Compare(op, operand) => {
                let ordering = compare(value, operand).ok_or_else(|| {
                    format!(
                        "cannot compare {} {value} with {} {operand} using `{}`",
                        type_name(value),
                        type_name(operand),
                        op.symbol()
                    )
                })?;
                Ok(op.accepts(ordering))
            }
            Predicate::In(options) => Ok(options.iter().any(|option| json_eq(value, option))),
            Predicate::Fields(fields) => {
                let Value::Object(object) = value else {
                    return Err(format!(
                        "field predicates need an object, found {}",
                        type_name(value)
                    ));
                };
                for (name, predicate) in fields {
                    // A missing field fails the predicate: the element does not have the property asked for.
                    let Some(field) = object.get(name) else {
                        return Ok(false);
                    };
                    if !predicate
                        .matches(field)
                        .map_err(|e| format!("field `{name}`: {e}"))?
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }
}

/// JSON equality where numbers compare by value (`1 == 1.0`).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare(a, b) == Some(Ordering::Equal),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Whether `value` matches `pattern` partially: every field the pattern names matches, recursively.
/// Used by `exclude`: `{"row": "A"}` removes every combination whose `row` is `A`.
pub(crate) fn partial_match(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(value), Value::Object(pattern)) => pattern.iter().all(|(key, expected)| {
            value
                .get(key)
                .is_some_and(|actual| partial_match(actual, expected))
        }),
        _ => json_eq(value, pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(spec: Value, value: Value) -> bool {
        Predicate::parse(&spec)
            .and_then(|p| p.matches(&value))
            .unwrap_or_else(|e| panic!("predicate {spec} on {value}: {e}"))
    }

    #[test]
    fn every_operator() {
        assert!(check(json!(">2021"), json!(2022)));
        assert!(!check(json!(">2021"), json!(2021)));
        assert!(check(json!(">=2021"), json!(2021)));
        assert!(check(json!("<2021"), json!(2020.5)));
        assert!(!check(json!("<=2021"), json!(2022)));
        assert!(check(json!("==2021"), json!(2021.0)));
        assert!(check(json!("!=EU"), json!("US")));
        assert!(!check(json!("!= EU"), json!("EU")));
        assert!(check(json!("> b"), json!("c")));
    }

    #[test]
    fn bare_values_are_equality_and_lists_are_membership() {
        assert!(check(json!("US"), json!("US")));
        assert!(!check(json!("2022"), json!(2022)));
        assert!(check(json!(2022), json!(2022)));
        assert!(check(json!(null), json!(null)));
        assert!(check(json!(["US", "EU"]), json!("EU")));
        assert!(!check(json!(["US", "EU"]), json!("APAC")));
    }

    #[test]
    fn operand_after_an_operator_is_json_when_it_parses() {
        assert!(check(json!("==\"2022\""), json!("2022")));
        assert!(check(json!("==true"), json!(true)));
        assert!(check(json!("!=null"), json!(0)));
    }

    #[test]
    fn field_predicates_apply_to_objects() {
        let admin = json!({"role": "admin", "age": 40});
        assert!(check(json!({"role": "admin", "age": ">30"}), admin.clone()));
        assert!(!check(json!({"role": "user"}), admin.clone()));
        assert!(!check(json!({"missing": "x"}), admin));
    }

    #[test]
    fn ordering_across_types_is_an_error() {
        let error = Predicate::parse(&json!(">2021"))
            .and_then(|p| p.matches(&json!("abc")))
            .unwrap_err();
        assert!(error.contains("cannot compare string"), "{error}");
        assert!(Predicate::parse(&json!(">=")).is_err());
    }

    #[test]
    fn partial_match_recurses_into_objects() {
        let value = json!({"os": {"name": "linux", "arch": "x86"}, "v": 1});
        assert!(partial_match(&value, &json!({"os": {"name": "linux"}})));
        assert!(!partial_match(&value, &json!({"os": {"name": "mac"}})));
        assert!(partial_match(&json!(1), &json!(1.0)));
    }
}
