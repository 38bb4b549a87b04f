//! A task's `agent`: `{"type": "analyze", "claim_timeout_ms": N}`, with `"executor": "agent"`.
//! Its instances are not run by workers: they wait for external agents to claim them (seed
//! 003). Parsed strictly, with the field at fault.

use serde::Deserialize;
use serde_json::Value;

/// The executor name of tasks done by agents.
pub const AGENT_EXECUTOR: &str = "agent";

/// How long a claim lasts unless the task says, in ms: 10 minutes.
pub const DEFAULT_CLAIM_TIMEOUT_MS: u64 = 600_000;

/// Who does a task's instances: agents of this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTask {
    /// The agent type that claims them.
    pub kind: String,
    /// A claim not completed within this long is released and counts as an attempt.
    pub claim_timeout_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSpec {
    #[serde(rename = "type")]
    kind: String,
    claim_timeout_ms: Option<u64>,
}

impl AgentTask {
    /// Parses an `agent` value; errors are `(field below agent, message)`.
    pub fn parse(value: &Value) -> Result<Self, (String, String)> {
        let spec: AgentSpec = crate::policy::read_at(value)?;
        let valid = !spec.kind.is_empty()
            && spec
                .kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err((
                "type".into(),
                format!(
                    "`{}` is not an agent type (letters, digits, `_`, `-`, `.`)",
                    spec.kind
                ),
            ));
        }
        if spec.claim_timeout_ms == Some(0) {
            return Err(("claim_timeout_ms".into(), "must be positive".into()));
        }
        Ok(Self {
            kind: spec.kind,
            claim_timeout_ms: spec.claim_timeout_ms.unwrap_or(DEFAULT_CLAIM_TIMEOUT_MS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agent_is_parsed_strictly() {
        assert_eq!(
            AgentTask::parse(&json!({"type": "analyze", "claim_timeout_ms": 500})),
            Ok(AgentTask {
                kind: "analyze".into(),
                claim_timeout_ms: 500
            })
        );
        assert_eq!(
            AgentTask::parse(&json!({"type": "validate"})).map(|a| a.claim_timeout_ms),
            Ok(DEFAULT_CLAIM_TIMEOUT_MS)
        );
        let error = |v| AgentTask::parse(&v).unwrap_err();
        assert_eq!(error(json!({"type": "a b"})).0, "type");
        assert_eq!(
            error(json!({"type": "a", "claim_timeout_ms": 0})).0,
            "claim_timeout_ms"
        );
        assert!(error(json!({"kind": "a"}))
            .1
            .contains("unknown field `kind`"));
    }
}
