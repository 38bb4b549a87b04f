//! Retry and failure policies, parsed from the session file and validated once.
//!
//! Retry (per task): `{"max_retries": 3, "retry_delays": [100, 500]}` (seed 002 also spells it
//! `_retry_delays`; the last delay repeats), or `{"max_retries": 3, "backoff": {"initial_ms",
//! "factor", "max_ms", "jitter"}, "budget_ms"}`. An empty `retry: {}` takes seed 000's defaults:
//! 3 retries, 30 s initial delay, factor 2, at most 5 min. No `retry` means no retries.
//! `on` limits retries to the failures it lists, `never_on` excludes some: kinds (`timeout`,
//! `error`, `permanent`), exit codes of the `command` executor (`exit:1`, `exit:*`), and
//! `{"message": "regex"}`. Permanent errors are never retried.
//!
//! Failure (per group): `"fail_fast"` (default), `"all_settled"`, or `{"threshold": N}` (at most
//! N failed instances, an integer) / `{"threshold": 0.1}` (at most that fraction, a number below 1
//! or written with a decimal point).

use crate::failure::{Failure, FailureKind};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// When and how often a failed instance attempt is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 means none.
    pub max_retries: u32,
    delays: Delays,
    /// Total time from an instance's first attempt after which it is not retried again.
    pub budget: Option<Duration>,
    /// Retry only failures one of these matches (every failure when empty).
    on: Vec<Condition>,
    /// Never retry failures one of these matches.
    never_on: Vec<Condition>,
}

/// One entry of `retry.on` / `retry.never_on`.
#[derive(Debug, Clone)]
enum Condition {
    /// `"timeout"`, `"error"` or `"permanent"`.
    Kind(FailureKind),
    /// `"exit:N"`: the `command` executor's program exited with code N.
    Exit(i32),
    /// `"exit:*"`: its program exited with any non-zero code.
    AnyExit,
    /// `{"message": "regex"}`: the error matches the pattern somewhere.
    Message(regex::Regex),
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Kind(a), Self::Kind(b)) => a == b,
            (Self::Exit(a), Self::Exit(b)) => a == b,
            (Self::AnyExit, Self::AnyExit) => true,
            (Self::Message(a), Self::Message(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Condition {
    fn matches(&self, failure: &Failure) -> bool {
        match self {
            Self::Kind(FailureKind::Error) => failure.kind.is_error(),
            Self::Kind(kind) => failure.kind == *kind,
            Self::Exit(code) => failure.exit_code() == Some(*code),
            Self::AnyExit => failure.exit_code().is_some(),
            Self::Message(pattern) => pattern.is_match(&failure.message),
        }
    }

    /// Parses one entry; the error is the message for its path.
    fn parse(value: &Value, list: &str) -> Result<Self, String> {
        match value {
            Value::String(text) => match text.as_str() {
                "timeout" => Ok(Self::Kind(FailureKind::Timeout)),
                "error" => Ok(Self::Kind(FailureKind::Error)),
                "permanent" if list == "on" => Err(
                    "an executor's permanent errors are never retried, so `permanent` cannot be in retry.on".into(),
                ),
                "permanent" => Ok(Self::Kind(FailureKind::Permanent)),
                "exit:*" => Ok(Self::AnyExit),
                other => match other.strip_prefix("exit:") {
                    Some(code) => code.parse().map(Self::Exit).map_err(|_| {
                        format!("`{other}`: an exit code is a whole number (or `exit:*` for any)")
                    }),
                    None => Err(format!(
                        "unknown condition `{other}` (expected timeout, error, permanent, exit:N, exit:* or {{\"message\": \"pattern\"}})"
                    )),
                },
            },
            Value::Object(map) if map.len() == 1 => match map.get("message") {
                Some(Value::String(pattern)) => regex::Regex::new(pattern)
                    .map(Self::Message)
                    .map_err(|error| format!("bad pattern: {error}")),
                Some(other) => Err(format!("the pattern must be a string, found {other}")),
                None => Err("a condition object has one field, `message`".into()),
            },
            other => Err(format!(
                "expected a condition string or {{\"message\": \"pattern\"}}, found {other}"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Delays {
    List(Vec<Duration>),
    Backoff {
        initial: Duration,
        factor: f64,
        max: Duration,
        jitter: f64,
    },
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::none()
    }
}

impl RetryPolicy {
    /// No retries: an instance's first failure is final.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            delays: Delays::List(Vec::new()),
            budget: None,
            on: Vec::new(),
            never_on: Vec::new(),
        }
    }

    /// A fixed list of delays (the last one repeats), as seed 002's `_retry_delays`.
    pub fn with_delays(max_retries: u32, delays: Vec<Duration>) -> Self {
        Self {
            max_retries,
            delays: Delays::List(delays),
            budget: None,
            on: Vec::new(),
            never_on: Vec::new(),
        }
    }

    /// Whether a failed attempt may be retried at all, by its kind and error: never a permanent
    /// one, never one `never_on` matches, and, when `on` is given, only one it matches.
    pub fn retries(&self, failure: &Failure) -> bool {
        if failure.is_permanent() {
            return false;
        }
        let wanted = self.on.is_empty() || self.on.iter().any(|c| c.matches(failure));
        wanted && !self.never_on.iter().any(|c| c.matches(failure))
    }

    /// The delay before attempt `next_attempt` (2 is the first retry), or `None` when the
    /// retries are used up. `sample` in [0, 1) drives jitter, so callers decide the randomness.
    pub fn delay_before(&self, next_attempt: u32, sample: f64) -> Option<Duration> {
        let retry = next_attempt.checked_sub(1)?;
        if retry == 0 || retry > self.max_retries {
            return None;
        }
        Some(match &self.delays {
            Delays::List(list) => list
                .get(retry as usize - 1)
                .or(list.last())
                .copied()
                .unwrap_or_default(),
            Delays::Backoff {
                initial,
                factor,
                max,
                jitter,
            } => {
                let base = initial.as_secs_f64() * factor.powi(retry as i32 - 1);
                let capped = base.min(max.as_secs_f64());
                let spread = 1.0 + jitter * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
                Duration::from_secs_f64((capped * spread).clamp(0.0, max.as_secs_f64()))
            }
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySpec {
    max_retries: Option<u32>,
    #[serde(alias = "_retry_delays")]
    retry_delays: Option<Vec<u64>>,
    backoff: Option<BackoffSpec>,
    budget_ms: Option<u64>,
    on: Option<Vec<Value>>,
    never_on: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffSpec {
    initial_ms: Option<u64>,
    factor: Option<f64>,
    max_ms: Option<u64>,
    jitter: Option<f64>,
}

/// Seed 000's defaults.
const DEFAULT_RETRIES: u32 = 3;
const DEFAULT_INITIAL_MS: u64 = 30_000;
const DEFAULT_FACTOR: f64 = 2.0;
const DEFAULT_MAX_MS: u64 = 300_000;
/// More retries than this is a mistake in a session file, not a policy.
const MAX_RETRIES: u32 = 1000;

/// `value` read as a `T`; an error is `(field below value, message)`, the field empty for the
/// value itself.
pub(crate) fn read_at<T: serde::de::DeserializeOwned>(
    value: &Value,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        (
            if path == "." { String::new() } else { path },
            error.into_inner().to_string(),
        )
    })
}

impl RetryPolicy {
    /// Parses a `retry` value; errors are `(field below retry, message)`.
    pub fn parse(value: &Value) -> Result<Self, (String, String)> {
        let spec: RetrySpec = read_at(value)?;
        let max_retries = spec.max_retries.unwrap_or(DEFAULT_RETRIES);
        if max_retries > MAX_RETRIES {
            return Err((
                "max_retries".into(),
                format!("{max_retries} retries is over the limit of {MAX_RETRIES}"),
            ));
        }
        let delays = match (spec.retry_delays, spec.backoff) {
            (Some(_), Some(_)) => {
                return Err((
                    String::new(),
                    "give either retry_delays or backoff, not both".into(),
                ))
            }
            (Some(list), None) => {
                if list.is_empty() && max_retries > 0 {
                    return Err((
                        "retry_delays".into(),
                        "an empty list gives no delay to retry with".into(),
                    ));
                }
                Delays::List(list.into_iter().map(Duration::from_millis).collect())
            }
            (None, backoff) => {
                let backoff = backoff.unwrap_or(BackoffSpec {
                    initial_ms: None,
                    factor: None,
                    max_ms: None,
                    jitter: None,
                });
                let factor = backoff.factor.unwrap_or(DEFAULT_FACTOR);
                if !(1.0..=100.0).contains(&factor) {
                    return Err((
                        "backoff.factor".into(),
                        format!("factor {factor} must be between 1 and 100"),
                    ));
                }
                let jitter = backoff.jitter.unwrap_or(0.0);
                if !(0.0..=1.0).contains(&jitter) {
                    return Err((
                        "backoff.jitter".into(),
                        format!("jitter {jitter} must be between 0 and 1"),
                    ));
                }
                let initial = backoff.initial_ms.unwrap_or(DEFAULT_INITIAL_MS);
                let max = backoff.max_ms.unwrap_or(DEFAULT_MAX_MS.max(initial));
                if max < initial {
                    return Err((
                        "backoff.max_ms".into(),
                        format!("max_ms {max} is below initial_ms {initial}"),
                    ));
                }
                Delays::Backoff {
                    initial: Duration::from_millis(initial),
                    factor,
                    max: Duration::from_millis(max),
                    jitter,
                }
            }
        };
        let conditions = |list: Option<Vec<Value>>, name: &str| {
            list.unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, value)| {
                    Condition::parse(value, name)
                        .map_err(|message| (format!("{name}[{i}]"), message))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            max_retries,
            delays,
            budget: spec.budget_ms.map(Duration::from_millis),
            on: conditions(spec.on, "on")?,
            never_on: conditions(spec.never_on, "never_on")?,
        })
    }
}

/// How a group treats failed instances.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum FailurePolicy {
    /// The first failed instance fails the group; running work is cancelled.
    #[default]
    FailFast,
    /// Every instance runs; the group fails at the end if any failed.
    AllSettled,
    /// The group tolerates failures up to the threshold and fails as soon as it is passed.
    Threshold(Threshold),
}

/// How many failed instances a `threshold` policy tolerates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// At most this many.
    Count(u64),
    /// At most this share of the group's instances, from 0 to 1.
    Fraction(f64),
}

impl FailurePolicy {
    /// Parses a `failure_policy` value, saying what is wrong with a bad one.
    pub fn parse(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(name) if name == "fail_fast" => Ok(Self::FailFast),
            Value::String(name) if name == "all_settled" => Ok(Self::AllSettled),
            Value::Object(map) if map.len() == 1 && map.contains_key("threshold") => {
                match map.get("threshold") {
                    Some(Value::Number(n)) if n.is_u64() => Ok(Self::Threshold(Threshold::Count(n.as_u64().unwrap_or(0)))),
                    Some(Value::Number(n)) => match n.as_f64() {
                        Some(f) if (0.0..=1.0).contains(&f) => Ok(Self::Threshold(Threshold::Fraction(f))),
                        _ => Err(format!("threshold {n} must be a count (integer) or a fraction between 0 and 1")),
                    },
                    _ => Err("threshold must be a number".into()),
                }
            }
            other => Err(format!(
                "unknown failure policy {other} (expected \"fail_fast\", \"all_settled\" or {{\"threshold\": N}})"
            )),
        }
    }

    /// Whether `failed` failures out of `total` instances pass what the policy tolerates.
    pub fn exceeded(&self, failed: u64, total: u64) -> bool {
        match self {
            Self::FailFast => failed > 0,
            Self::AllSettled => false,
            Self::Threshold(Threshold::Count(limit)) => failed > *limit,
            Self::Threshold(Threshold::Fraction(ratio)) => {
                total > 0 && failed as f64 > ratio * total as f64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn listed_delays_repeat_the_last_and_stop_at_max_retries() {
        let policy =
            RetryPolicy::parse(&json!({"max_retries": 4, "_retry_delays": [100, 500]})).unwrap();
        assert_eq!(policy.delay_before(1, 0.5), None);
        assert_eq!(policy.delay_before(2, 0.5), ms(100));
        assert_eq!(policy.delay_before(3, 0.5), ms(500));
        assert_eq!(policy.delay_before(5, 0.5), ms(500));
        assert_eq!(policy.delay_before(6, 0.5), None);
    }

    #[test]
    fn backoff_defaults_are_seed_000s() {
        let policy = RetryPolicy::parse(&json!({})).unwrap();
        assert_eq!(policy.max_retries, 3);
        assert_eq!(policy.delay_before(2, 0.5), ms(30_000));
        assert_eq!(policy.delay_before(3, 0.5), ms(60_000));
        assert_eq!(policy.delay_before(4, 0.5), ms(120_000));
        let capped = RetryPolicy::parse(&json!({"max_retries": 10})).unwrap();
        assert_eq!(capped.delay_before(10, 0.5), ms(300_000));
    }

    #[test]
    fn jitter_spreads_around_the_delay() {
        let policy =
            RetryPolicy::parse(&json!({"backoff": {"initial_ms": 1000, "jitter": 0.5}})).unwrap();
        assert_eq!(policy.delay_before(2, 0.0), ms(500));
        assert_eq!(policy.delay_before(2, 0.5), ms(1000));
        assert_eq!(policy.delay_before(2, 1.0), ms(1500));
    }

    #[test]
    fn bad_retry_values_name_the_field() {
        let error = |v| RetryPolicy::parse(&v).unwrap_err();
        assert_eq!(error(json!({"max_retries": -1})).0, "max_retries");
        assert_eq!(
            error(json!({"max_retries": 5000})).1,
            "5000 retries is over the limit of 1000"
        );
        assert_eq!(
            error(json!({"backoff": {"factor": 0.5}})),
            (
                "backoff.factor".into(),
                "factor 0.5 must be between 1 and 100".into()
            )
        );
        assert_eq!(
            error(json!({"backoff": {"jitter": 2.0}})).0,
            "backoff.jitter"
        );
        assert_eq!(
            error(json!({"backoff": {"initial_ms": 10, "max_ms": 5}})).0,
            "backoff.max_ms"
        );
        assert_eq!(
            error(json!({"retry_delays": [1], "backoff": {}})).1,
            "give either retry_delays or backoff, not both"
        );
        assert_eq!(error(json!({"retry_delays": []})).0, "retry_delays");
        assert!(error(json!({"retries": 1}))
            .1
            .contains("unknown field `retries`"));
    }

    #[test]
    fn conditions_choose_which_failures_are_retried() {
        let policy = RetryPolicy::parse(&json!({
            "max_retries": 2, "retry_delays": [10],
            "on": ["timeout", "exit:1", {"message": "(?i)connection reset"}],
            "never_on": [{"message": "quota"}]
        }))
        .unwrap();
        let timeout = Failure::timeout(Duration::from_millis(100));
        assert!(policy.retries(&timeout));
        assert!(policy.retries(&Failure::exit("sh", 1, "x")));
        assert!(!policy.retries(&Failure::exit("sh", 2, "x")));
        assert!(policy.retries(&Failure::error("read: Connection Reset by peer")));
        assert!(!policy.retries(&Failure::error("connection reset, quota exceeded")));
        assert!(!policy.retries(&Failure::error("GET returned 404")));
        assert!(
            !policy.retries(&Failure::new(
                FailureKind::Permanent,
                timeout.message.clone()
            )),
            "permanent is never retried"
        );
        // The kind decides, not the text: a message that reads like a timeout is an error.
        assert!(!policy.retries(&Failure::error("timed out after 100 ms")));

        let everything_but =
            RetryPolicy::parse(&json!({"never_on": ["timeout", "exit:*"]})).unwrap();
        assert!(everything_but.retries(&Failure::error("GET returned 503")));
        assert!(everything_but.retries(&Failure::signal(9, "`x` ended by signal: 9")));
        assert!(!everything_but.retries(&Failure::timeout(Duration::from_millis(5))));
        assert!(!everything_but.retries(&Failure::exit("x", 7, "")));
        let errors_only = RetryPolicy::parse(&json!({"on": ["error"]})).unwrap();
        assert!(errors_only.retries(&Failure::exit("x", 7, "")));
        assert!(errors_only.retries(&Failure::new(FailureKind::Refused, "no")));
        assert!(!errors_only.retries(&timeout));
        assert!(RetryPolicy::parse(&json!({}))
            .unwrap()
            .retries(&Failure::error("anything")));
        assert!(!RetryPolicy::parse(&json!({}))
            .unwrap()
            .retries(&Failure::permanent("anything")));
    }

    #[test]
    fn bad_conditions_name_their_entry() {
        let error = |v| RetryPolicy::parse(&v).unwrap_err();
        assert_eq!(
            error(json!({"on": ["error", "timeuot"]})),
            ("on[1]".into(), "unknown condition `timeuot` (expected timeout, error, permanent, exit:N, exit:* or {\"message\": \"pattern\"})".into())
        );
        assert_eq!(
            error(json!({"on": ["permanent"]})).1,
            "an executor's permanent errors are never retried, so `permanent` cannot be in retry.on"
        );
        assert_eq!(
            error(json!({"never_on": ["exit:one"]})),
            (
                "never_on[0]".into(),
                "`exit:one`: an exit code is a whole number (or `exit:*` for any)".into()
            )
        );
        assert!(error(json!({"on": [{"message": "("}]}))
            .1
            .starts_with("bad pattern: "));
        assert_eq!(
            error(json!({"on": [{"pattern": "x"}]})).1,
            "a condition object has one field, `message`"
        );
        assert_eq!(
            error(json!({"on": [3]})).1,
            "expected a condition string or {\"message\": \"pattern\"}, found 3"
        );
        assert_eq!(error(json!({"on": "timeout"})).0, "on");
    }

    #[test]
    fn failure_policies() {
        assert_eq!(
            FailurePolicy::parse(&json!("fail_fast")),
            Ok(FailurePolicy::FailFast)
        );
        assert_eq!(
            FailurePolicy::parse(&json!("all_settled")),
            Ok(FailurePolicy::AllSettled)
        );
        assert_eq!(
            FailurePolicy::parse(&json!({"threshold": 2})),
            Ok(FailurePolicy::Threshold(Threshold::Count(2)))
        );
        assert_eq!(
            FailurePolicy::parse(&json!({"threshold": 0.25})),
            Ok(FailurePolicy::Threshold(Threshold::Fraction(0.25)))
        );
        assert!(FailurePolicy::parse(&json!({"threshold": 1.5})).is_err());
        assert!(FailurePolicy::parse(&json!("best_effort"))
            .unwrap_err()
            .contains("unknown failure policy"));

        assert!(FailurePolicy::FailFast.exceeded(1, 100));
        assert!(!FailurePolicy::AllSettled.exceeded(100, 100));
        assert!(!FailurePolicy::Threshold(Threshold::Count(2)).exceeded(2, 10));
        assert!(FailurePolicy::Threshold(Threshold::Count(2)).exceeded(3, 10));
        assert!(!FailurePolicy::Threshold(Threshold::Fraction(0.25)).exceeded(25, 100));
        assert!(FailurePolicy::Threshold(Threshold::Fraction(0.25)).exceeded(26, 100));
    }
}
