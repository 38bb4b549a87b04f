//! Which combinations an expansion keeps and adds: `include` entries, `exclude` patterns and
//! custom `conditions`, evaluated once at plan time.

use crate::config::{Conditions, Spec};
use crate::error::{Result, Site};
use crate::expansion::{Expansion, Point};
use crate::path::{lookup_parts, FieldPath};
use crate::predicate::{partial_match, Predicate};
use serde_json::{Map, Value};

pub(crate) fn includes(
    spec: &Spec,
    variables: &[String],
    config_path: &FieldPath,
    site: &Site,
) -> Result<Vec<Vec<Value>>> {
    let path = config_path.key("include");
    spec.include
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = path.index(i);
            if let Some(key) = entry.keys().find(|key| !variables.contains(key)) {
                return Err(site.unknown_variable(&at.key(key), key, variables));
            }
            variables
                .iter()
                .map(|var| {
                    entry.get(var).cloned().ok_or_else(|| {
                        site.invalid(
                            &at,
                            format!("an include entry gives every variable; `{var}` is missing"),
                        )
                    })
                })
                .collect()
        })
        .collect()
}

/// A condition predicate bound to a variable and the fields below it.
pub(crate) struct Condition {
    var: usize,
    fields: Vec<String>,
    predicate: Predicate,
    path: FieldPath,
}

pub(crate) fn resolve_conditions(
    conditions: &Conditions,
    variables: &[String],
    path: &FieldPath,
    site: &Site,
) -> Result<Vec<Vec<Condition>>> {
    let many = conditions.len() > 1;
    conditions
        .iter()
        .enumerate()
        .map(|(i, alternative)| {
            let at = if many { path.index(i) } else { path.clone() };
            alternative
                .iter()
                .map(|(name, predicate)| {
                    let mut parts = name.split('.');
                    let head = parts.next().unwrap_or_default();
                    let var = variables
                        .iter()
                        .position(|v| v == head)
                        .ok_or_else(|| site.unknown_variable(&at.key(name), head, variables))?;
                    Ok(Condition {
                        var,
                        fields: parts.map(str::to_string).collect(),
                        predicate: predicate.clone(),
                        path: at.key(name),
                    })
                })
                .collect()
        })
        .collect()
}

/// Whether a combination survives `exclude` and `conditions`.
pub(crate) fn keep(
    expansion: &Expansion,
    combination: u64,
    exclude: &[Map<String, Value>],
    conditions: &[Vec<Condition>],
) -> Result<bool, (FieldPath, String)> {
    let point = Point::Product(combination);
    let value = |k: usize| expansion.variable(point, k).ok();
    let excluded = exclude.iter().any(|entry| {
        entry.iter().all(|(key, pattern)| {
            let k = expansion.variables.iter().position(|v| v == key);
            k.and_then(value)
                .is_some_and(|actual| partial_match(&actual, pattern))
        })
    });
    if excluded {
        return Ok(false);
    }
    if conditions.is_empty() {
        return Ok(true);
    }
    for alternative in conditions {
        let mut holds = true;
        for condition in alternative {
            let base = value(condition.var);
            let found = base
                .as_deref()
                .and_then(|v| lookup_parts(v, condition.fields.iter().map(String::as_str)));
            holds &= match found {
                None => false,
                Some(v) => condition
                    .predicate
                    .matches(v)
                    .map_err(|m| (condition.path.clone(), m))?,
            };
            if !holds {
                break;
            }
        }
        if holds {
            return Ok(true);
        }
    }
    Ok(false)
}
