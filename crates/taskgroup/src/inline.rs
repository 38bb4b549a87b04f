//! A task's `inline_results`: `{"count": N, "bytes": B}`. A `separate` task with more than `count`
//! instances, or whose results come to more than `bytes` of JSON, leaves them in the store and
//! puts a reference in the context instead of the list (see `expansion::ResultsRef`). Parsed
//! strictly, with the field at fault.

use serde::Deserialize;
use serde_json::Value;

/// Results kept in the context by default: at most this many ...
pub const DEFAULT_INLINE_COUNT: u64 = 100_000;
/// ... and at most this many bytes of JSON.
pub const DEFAULT_INLINE_BYTES: u64 = 16 << 20;

/// How many results, and how many bytes of them, a `separate` task keeps in the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineResults {
    /// At most this many results.
    pub count: u64,
    /// At most this many bytes of results, as compact JSON.
    pub bytes: u64,
}

impl Default for InlineResults {
    fn default() -> Self {
        Self {
            count: DEFAULT_INLINE_COUNT,
            bytes: DEFAULT_INLINE_BYTES,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InlineSpec {
    count: Option<u64>,
    bytes: Option<u64>,
}

impl InlineResults {
    /// Parses an `inline_results` value; errors are `(field below inline_results, message)`.
    /// A field left out keeps its default.
    pub fn parse(value: &Value) -> Result<Self, (String, String)> {
        let spec: InlineSpec = crate::policy::read_at(value)?;
        let defaults = Self::default();
        Ok(Self {
            count: spec.count.unwrap_or(defaults.count),
            bytes: spec.bytes.unwrap_or(defaults.bytes),
        })
    }

    /// Whether `count` results of `bytes` bytes in all stay in the context.
    pub fn holds(&self, count: u64, bytes: u64) -> bool {
        count <= self.count && bytes <= self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inline_results_are_parsed_strictly_with_defaults() {
        assert_eq!(
            InlineResults::parse(&json!({"count": 10})),
            Ok(InlineResults {
                count: 10,
                bytes: DEFAULT_INLINE_BYTES
            })
        );
        assert_eq!(
            InlineResults::parse(&json!({})),
            Ok(InlineResults::default())
        );
        let error = |v| InlineResults::parse(&v).unwrap_err();
        assert_eq!(error(json!({"count": -1})).0, "count");
        assert!(error(json!({"items": 5}))
            .1
            .contains("unknown field `items`"));
        let limit = InlineResults {
            count: 2,
            bytes: 10,
        };
        assert!(limit.holds(2, 10));
        assert!(!limit.holds(3, 1));
        assert!(!limit.holds(1, 11));
    }
}
