//! A task's `memoize`: `{"key": "<template>", "ttl_s": N}`. An instance whose key has a stored
//! success (from any earlier session) is not executed: that result is used, and counted as
//! `cached`. Parsed strictly, with the field at fault.

use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// How a task's instances are memoized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memoize {
    /// The key's template, over the instance's variables, `index` and `context.*`.
    pub key: String,
    /// How long a stored success is used; for ever when absent.
    pub ttl: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoizeSpec {
    key: String,
    ttl_s: Option<u64>,
}

impl Memoize {
    /// Parses a `memoize` value; errors are `(field below memoize, message)`.
    pub fn parse(value: &Value) -> Result<Self, (String, String)> {
        let spec: MemoizeSpec = crate::policy::read_at(value)?;
        if spec.key.trim().is_empty() {
            return Err((
                "key".into(),
                "the key must not be empty (a template such as \"fetch-{{user.id}}\")".into(),
            ));
        }
        if spec.ttl_s == Some(0) {
            return Err((
                "ttl_s".into(),
                "ttl_s must be positive (leave it out to keep results for ever)".into(),
            ));
        }
        Ok(Self {
            key: spec.key,
            ttl: spec.ttl_s.map(Duration::from_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn memoize_is_parsed_strictly() {
        assert_eq!(
            Memoize::parse(&json!({"key": "k-{{n}}", "ttl_s": 60})),
            Ok(Memoize {
                key: "k-{{n}}".into(),
                ttl: Some(Duration::from_secs(60))
            })
        );
        let error = |v| Memoize::parse(&v).unwrap_err();
        assert_eq!(error(json!({"key": " "})).0, "key");
        assert_eq!(error(json!({"key": "k", "ttl_s": 0})).0, "ttl_s");
        assert_eq!(error(json!({"key": "k", "ttl_s": -1})).0, "ttl_s");
        assert!(error(json!({"ttl_s": 5})).1.contains("missing field `key`"));
        assert!(error(json!({"key": "k", "ttl": 5}))
            .1
            .contains("unknown field `ttl`"));
    }
}
