//! Custom expansion: `transform_rules` over a source object (`combine`, `filter`,
//! `field_mappings`), laid out as dimensions and variables for the combination space.

use crate::config::{expect_object, wrong_type, Spec};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result, Site};
use crate::expansion::{Binding, Source};
use crate::path::FieldPath;
use crate::plan::{resolve, zip_groups, zipped, Layout};
use crate::predicate::Predicate;
use serde_json::{Map, Value};

/// Custom: variables are the fields of the source object, with `combine` as the cross product.
pub(crate) fn custom_layout(
    spec: &Spec,
    input: &Value,
    context: &Context<'_>,
    config_path: &FieldPath,
    site: &Site,
) -> Result<Layout> {
    let rules_path = config_path.key("transform_rules");
    let Some(rules) = &spec.custom else {
        return Err(site.error(config_path, ErrorKind::MissingField("transform_rules")));
    };
    let (source_path, source_at) = match &rules.source {
        Some(source) => (source.as_str(), rules_path.key("source")),
        None => ("data", rules_path.clone()),
    };
    let source = match resolve(source_path, input, context, &source_at, site) {
        Err(Error { kind: ErrorKind::NotInInput { .. }, .. }) if rules.source.is_none() => {
            return Err(site.invalid(
                &source_at,
                "a custom expansion reads its fields from the input's `data` object, which is missing (or set transform_rules.source)",
            ))
        }
        other => other?,
    };
    let fields = expect_object(source, &source_at, site)?;
    let combine_path = rules_path.key("combine");
    let filter_path = rules_path.key("filter");
    for (i, name) in rules.combine.iter().enumerate() {
        let at = combine_path.index(i);
        match fields.get(name) {
            None => return Err(missing_field(site, &at, name, fields)),
            Some(Value::Array(_)) => {}
            Some(other) => return Err(wrong_type(site, &at, "the name of an array field", other)),
        }
        if rules.combine[..i].contains(name) {
            return Err(site.invalid(&at, format!("`{name}` is combined twice")));
        }
    }
    for (name, _) in &rules.filter {
        let at = filter_path.key(name);
        match fields.get(name) {
            None => return Err(missing_field(site, &at, name, fields)),
            Some(Value::Array(_)) => {}
            Some(other) => return Err(wrong_type(site, &at, "a filter on an array field", other)),
        }
    }
    let filter_of = |name: &str| rules.filter.iter().find(|(n, _)| n == name).map(|(_, p)| p);

    // Each combined (or zipped) group of fields is one dimension; filters drop whole tuples.
    let groups = zip_groups(&spec.zip, &rules.combine, &config_path.key("zip"), site)?;
    let mut dims = Vec::new();
    let mut dim_names = Vec::new();
    let mut dim_of = vec![(0, 0); rules.combine.len()];
    for (d, group) in groups.iter().enumerate() {
        let columns: Vec<Vec<Value>> = rules
            .combine
            .iter()
            .map(|name| {
                fields
                    .get(name)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let mut dim = zipped(
            group,
            &columns,
            &rules.combine,
            &config_path.key("zip"),
            site,
        )?;
        let predicates: Vec<(usize, &Predicate)> = group
            .iter()
            .enumerate()
            .filter_map(|(column, &field)| filter_of(&rules.combine[field]).map(|p| (column, p)))
            .collect();
        if !predicates.is_empty() {
            let mut kept = Vec::new();
            for row in 0..dim.len {
                let mut keep = true;
                for &(column, predicate) in &predicates {
                    let name = &rules.combine[group[column]];
                    keep &= predicate.matches(&dim.columns[column][row]).map_err(|m| {
                        site.invalid(
                            &filter_path.key(name),
                            format!("element {row} of `{name}`: {m}"),
                        )
                    })?;
                }
                if keep {
                    kept.push(row);
                }
            }
            for column in &mut dim.columns {
                *column = kept.iter().map(|&row| column[row].clone()).collect();
            }
            dim.len = kept.len();
        }
        for (column, &field) in group.iter().enumerate() {
            dim_of[field] = (d, column);
        }
        let names: Vec<String> = group
            .iter()
            .map(|&f| format!("`{}`", rules.combine[f]))
            .collect();
        let filtered = if predicates.is_empty() {
            ""
        } else {
            " after filtering"
        };
        dim_names.push(format!("{}{filtered}", names.join(" and ")));
        dims.push(dim);
    }

    // Every source field is a variable: combined ones take one element, the rest pass whole
    // (filtered first when a filter names them).
    let mut base_names = Vec::new();
    let mut base_bindings = Vec::new();
    let mut consts = Vec::new();
    for (name, value) in fields {
        let source = match rules.combine.iter().position(|c| c == name) {
            Some(field) => {
                let (dim, column) = dim_of[field];
                Source::Dim { dim, column }
            }
            None => {
                let value = match (filter_of(name), value) {
                    (Some(predicate), Value::Array(items)) => {
                        let mut kept = Vec::new();
                        for (i, item) in items.iter().enumerate() {
                            let keep = predicate.matches(item).map_err(|m| {
                                site.invalid(
                                    &filter_path.key(name),
                                    format!("element {i} of `{name}`: {m}"),
                                )
                            })?;
                            if keep {
                                kept.push(item.clone());
                            }
                        }
                        Value::Array(kept)
                    }
                    _ => value.clone(),
                };
                consts.push(value);
                Source::Const(consts.len() - 1)
            }
        };
        base_names.push(name.clone());
        base_bindings.push(Binding {
            source,
            fields: Vec::new(),
        });
    }

    let (variables, bindings) = match &rules.field_mappings {
        None => (base_names, base_bindings),
        Some(mappings) => {
            let at = rules_path.key("field_mappings");
            let mut variables = Vec::new();
            let mut bindings = Vec::new();
            for (name, path) in mappings {
                let mut parts = path.split('.');
                let head = parts.next().unwrap_or_default();
                let Some(base) = base_names.iter().position(|n| n == head) else {
                    return Err(missing_field(site, &at.key(name), head, fields));
                };
                variables.push(name.clone());
                bindings.push(Binding {
                    source: base_bindings[base].source.clone(),
                    fields: parts.map(str::to_string).collect(),
                });
            }
            (variables, bindings)
        }
    };
    let consumed = if source_path.starts_with("context.") {
        Vec::new()
    } else {
        vec![source_path.to_string()]
    };
    Ok(Layout {
        variables,
        bindings,
        consts,
        dims,
        dim_names,
        consumed,
        numbers: None,
        referenced: None,
    })
}

fn missing_field(site: &Site, at: &FieldPath, name: &str, fields: &Map<String, Value>) -> Error {
    let known: Vec<&str> = fields.keys().map(String::as_str).collect();
    site.invalid(
        at,
        format!(
            "no field `{name}` in the source (fields: {})",
            known.join(", ")
        ),
    )
}
