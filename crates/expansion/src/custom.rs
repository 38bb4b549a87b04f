//! Custom expansion: `transform_rules` over a source object (`combine`, `filter`,
//! `field_mappings`), laid out as dimensions and variables for the combination space.

use crate::config::{expect_object, wrong_type, CustomRules, Spec};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result, Site};
use crate::expansion::{Binding, Source};
use crate::layout::{resolve, zip_groups, zipped, Layout};
use crate::path::FieldPath;
use crate::predicate::Predicate;
use crate::space::Dimension;
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
    let custom = Custom {
        rules,
        fields: expect_object(source, &source_at, site)?,
        filter_path: rules_path.key("filter"),
        rules_path,
        site,
    };
    custom.check()?;
    let zip_path = config_path.key("zip");
    let (dims, dim_names, dim_of) = custom.dimensions(spec, &zip_path)?;
    let (variables, bindings, consts) = custom.variables(&dim_of)?;
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

/// The dimensions, their names, and where each combined field is (dimension, column).
type Dimensions = (Vec<Dimension>, Vec<String>, Vec<(usize, usize)>);

/// A custom expansion's rules over its source object's fields.
struct Custom<'a> {
    rules: &'a CustomRules,
    fields: &'a Map<String, Value>,
    rules_path: FieldPath,
    filter_path: FieldPath,
    site: &'a Site,
}

impl Custom<'_> {
    /// Every field `combine` and `filter` name is an array of the source, combined once.
    fn check(&self) -> Result<()> {
        let (rules, fields, site) = (self.rules, self.fields, self.site);
        let combine_path = self.rules_path.key("combine");
        for (i, name) in rules.combine.iter().enumerate() {
            let at = combine_path.index(i);
            match fields.get(name) {
                None => return Err(missing_field(site, &at, name, fields)),
                Some(Value::Array(_)) => {}
                Some(other) => {
                    return Err(wrong_type(site, &at, "the name of an array field", other))
                }
            }
            if rules.combine[..i].contains(name) {
                return Err(site.invalid(&at, format!("`{name}` is combined twice")));
            }
        }
        for (name, _) in &rules.filter {
            let at = self.filter_path.key(name);
            match fields.get(name) {
                None => return Err(missing_field(site, &at, name, fields)),
                Some(Value::Array(_)) => {}
                Some(other) => {
                    return Err(wrong_type(site, &at, "a filter on an array field", other))
                }
            }
        }
        Ok(())
    }

    /// The filter on field `name`, if any.
    fn filter_of(&self, name: &str) -> Option<&Predicate> {
        let filters = &self.rules.filter;
        filters.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// Whether element `i` of field `name` passes `predicate`.
    fn passes(&self, predicate: &Predicate, name: &str, i: usize, item: &Value) -> Result<bool> {
        predicate.matches(item).map_err(|m| {
            self.site.invalid(
                &self.filter_path.key(name),
                format!("element {i} of `{name}`: {m}"),
            )
        })
    }

    /// Each combined (or zipped) group of fields is one dimension, its filters dropping whole
    /// tuples; with each dimension's name, and where each combined field is (dimension,
    /// column).
    fn dimensions(&self, spec: &Spec, zip_path: &FieldPath) -> Result<Dimensions> {
        let combine = &self.rules.combine;
        let groups = zip_groups(&spec.zip, combine, zip_path, self.site)?;
        let columns: Vec<Vec<Value>> = combine
            .iter()
            .map(|name| {
                let column = self.fields.get(name).and_then(Value::as_array);
                column.cloned().unwrap_or_default()
            })
            .collect();
        let (mut dims, mut dim_names) = (Vec::new(), Vec::new());
        let mut dim_of = vec![(0, 0); combine.len()];
        for (d, group) in groups.iter().enumerate() {
            let mut dim = zipped(group, &columns, combine, zip_path, self.site)?;
            let predicates: Vec<(usize, &Predicate)> = group
                .iter()
                .enumerate()
                .filter_map(|(column, &field)| self.filter_of(&combine[field]).map(|p| (column, p)))
                .collect();
            if !predicates.is_empty() {
                let mut kept = Vec::new();
                for row in 0..dim.len {
                    let mut keep = true;
                    for &(column, predicate) in &predicates {
                        let name = &combine[group[column]];
                        keep &= self.passes(predicate, name, row, &dim.columns[column][row])?;
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
            let names: Vec<String> = group.iter().map(|&f| format!("`{}`", combine[f])).collect();
            let filtered = if predicates.is_empty() {
                ""
            } else {
                " after filtering"
            };
            dim_names.push(format!("{}{filtered}", names.join(" and ")));
            dims.push(dim);
        }
        Ok((dims, dim_names, dim_of))
    }

    /// Every source field is a variable: combined ones take one element, the rest pass whole
    /// (filtered first when a filter names them); `field_mappings` renames and reaches into
    /// them. The variables, their bindings, and the constants they bind to.
    fn variables(
        &self,
        dim_of: &[(usize, usize)],
    ) -> Result<(Vec<String>, Vec<Binding>, Vec<Value>)> {
        let mut base_names = Vec::new();
        let mut base_bindings = Vec::new();
        let mut consts = Vec::new();
        for (name, value) in self.fields {
            let source = match self.rules.combine.iter().position(|c| c == name) {
                Some(field) => {
                    let (dim, column) = dim_of[field];
                    Source::Dim { dim, column }
                }
                None => {
                    consts.push(self.constant(name, value)?);
                    Source::Const(consts.len() - 1)
                }
            };
            base_names.push(name.clone());
            base_bindings.push(Binding {
                source,
                fields: Vec::new(),
            });
        }
        let Some(mappings) = &self.rules.field_mappings else {
            return Ok((base_names, base_bindings, consts));
        };
        let at = self.rules_path.key("field_mappings");
        let mut variables = Vec::new();
        let mut bindings = Vec::new();
        for (name, path) in mappings {
            let mut parts = path.split('.');
            let head = parts.next().unwrap_or_default();
            let Some(base) = base_names.iter().position(|n| n == head) else {
                return Err(missing_field(self.site, &at.key(name), head, self.fields));
            };
            variables.push(name.clone());
            bindings.push(Binding {
                source: base_bindings[base].source.clone(),
                fields: parts.map(str::to_string).collect(),
            });
        }
        Ok((variables, bindings, consts))
    }

    /// A field passed whole: filtered when a filter names it.
    fn constant(&self, name: &str, value: &Value) -> Result<Value> {
        let (Some(predicate), Value::Array(items)) = (self.filter_of(name), value) else {
            return Ok(value.clone());
        };
        let mut kept = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if self.passes(predicate, name, i, item)? {
                kept.push(item.clone());
            }
        }
        Ok(Value::Array(kept))
    }
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
