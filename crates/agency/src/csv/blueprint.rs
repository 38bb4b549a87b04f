//! `agency csv`'s blueprints: the steps each task type's rows run, from a file or seed 001's.

use super::CsvError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Where `fetch_data` GETs by default, as seed 001 has it (these machines have no internet:
/// set `--fetch-url`).
pub const DEFAULT_FETCH_URL: &str = "https://httpbin.org/get";

/// A blueprint file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlueprintFile {
    blueprints: BTreeMap<String, Vec<Step>>,
}

/// One step of a blueprint: a task of the row's pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The step's name (letters, digits, `_`, `-`), unique in its blueprint.
    pub step: String,
    /// The executor that runs it.
    pub executor: String,
    /// Its input, `{{task_id}}` and `{{task_type}}` standing for the row's.
    #[serde(default)]
    pub input: Value,
}

/// The steps of each task type, `*` for every type without its own.
#[derive(Debug, Clone)]
pub struct Blueprints(pub(super) BTreeMap<String, Vec<Step>>);

impl Blueprints {
    /// Seed 001's blueprint for every task type: GET `fetch_url` (10 s timeout), wait 5 s,
    /// emit an event.
    pub fn seed(fetch_url: &str) -> Self {
        let steps = vec![
            Step {
                step: "fetch_data".into(),
                executor: "http_get".into(),
                input: json!({"url": fetch_url, "timeout_ms": 10_000}),
            },
            Step {
                step: "long_delay".into(),
                executor: "sleep".into(),
                input: json!({"ms": 5_000}),
            },
            Step {
                step: "emit_event".into(),
                executor: "emit_event".into(),
                input: json!({"event": "task_completed", "task_id": "{{task_id}}", "task_type": "{{task_type}}"}),
            },
        ];
        Self(BTreeMap::from([("*".to_string(), steps)]))
    }

    /// Reads and checks a blueprint file: every problem names its place.
    pub fn read(path: &Path) -> Result<Self, CsvError> {
        let text = std::fs::read_to_string(path).map_err(|source| CsvError::Io {
            doing: "read the blueprint file",
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |problem: String| CsvError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let file: BlueprintFile = serde_json::from_str(&text)
            .map_err(|error| invalid(format!("not a blueprint file: {error}")))?;
        if file.blueprints.is_empty() {
            return Err(invalid("`blueprints` names no task type".into()));
        }
        for (kind, steps) in &file.blueprints {
            check(kind, steps).map_err(invalid)?;
        }
        Ok(Self(file.blueprints))
    }

    /// The blueprint a task type runs: its own, or `*`.
    pub(super) fn of(&self, kind: &str) -> Option<&str> {
        self.0
            .get_key_value(kind)
            .or_else(|| self.0.get_key_value("*"))
            .map(|(key, _)| key.as_str())
    }

    /// The task types that have a blueprint, for saying so when a row's has none.
    pub(super) fn kinds(&self) -> String {
        self.0.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// What is wrong with blueprint `kind`'s steps, if anything.
fn check(kind: &str, steps: &[Step]) -> Result<(), String> {
    if steps.is_empty() {
        return Err(format!("blueprints.{kind}: no steps"));
    }
    for (i, step) in steps.iter().enumerate() {
        let valid = !step.step.is_empty()
            && step
                .step
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(format!(
                "blueprints.{kind}[{i}].step: `{}` is not a step name (letters, digits, `_`, `-`)",
                step.step
            ));
        }
        if steps[..i].iter().any(|s| s.step == step.step) {
            return Err(format!(
                "blueprints.{kind}[{i}].step: `{}` comes twice",
                step.step
            ));
        }
    }
    Ok(())
}
