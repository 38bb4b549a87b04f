//! Templates: `{{name}}`, `{{user.name}}`, `{{row}}-{{col}}`, `{{index}}`, `{{context.key}}` in any
//! string (or object key) of a task input.
//!
//! A string that is exactly one placeholder becomes the variable's JSON value itself; placeholders
//! inside longer strings are rendered as text. Templates are parsed once, when the expansion is
//! planned, and every placeholder is resolved to a slot then, so rendering never looks names up and
//! never re-reads what it inserted: a `{{` coming from a value stays literal.

use crate::error::ErrorKind;
use crate::path::{lookup_parts, FieldPath};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// What a placeholder's first name refers to, decided at plan time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Slot {
    /// The instance's variable number `k` (see `Expansion::variables`).
    Var(usize),
    /// The instance index, `{{index}}`.
    Index,
    /// A value fixed at plan time (`{{context.key}}`).
    Literal(Value),
    /// The result of the same instance of upstream task number `j`, given when rendering
    /// (`{{upstream.<task>}}`).
    Upstream(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placeholder {
    /// As written, for error messages.
    name: String,
    slot: Slot,
    /// Fields below the variable (`name` in `user.name`).
    fields: Vec<String>,
    /// Where the placeholder is written.
    path: FieldPath,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Text(String),
    Placeholder(Placeholder),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Key {
    Static(String),
    Text(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Template {
    Static(Value),
    Whole(Placeholder),
    Text(Vec<Piece>),
    Array(Vec<Template>),
    Object(Vec<(Key, Template)>),
}

/// Gives a placeholder's slot from its first name and the rest of its dotted parts.
pub(crate) trait Resolve {
    fn resolve(&self, head: &str, rest: &[&str]) -> Result<(Slot, usize), ErrorKind>;
}

/// Gives an instance's values while rendering.
pub(crate) trait Scope {
    fn var(&self, k: usize) -> Result<Cow<'_, Value>, ErrorKind>;
    fn index(&self) -> u64;
    fn upstream(&self, j: usize) -> Result<&Value, ErrorKind>;
}

impl Template {
    pub fn parse(
        value: &Value,
        path: &FieldPath,
        resolver: &dyn Resolve,
    ) -> Result<Self, (FieldPath, ErrorKind)> {
        Ok(match value {
            Value::String(text) => Self::parse_string(text, path, resolver)?,
            Value::Array(items) => {
                let parts = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Self::parse(item, &path.index(i), resolver))
                    .collect::<Result<Vec<_>, _>>()?;
                if parts.iter().all(|p| matches!(p, Template::Static(_))) {
                    Template::Static(value.clone())
                } else {
                    Template::Array(parts)
                }
            }
            Value::Object(map) => {
                let mut parts = Vec::with_capacity(map.len());
                for (key, item) in map {
                    let item_path = path.key(key);
                    let key = match parse_pieces(key, &item_path, resolver)? {
                        None => Key::Static(key.clone()),
                        Some(pieces) => Key::Text(pieces),
                    };
                    parts.push((key, Self::parse(item, &item_path, resolver)?));
                }
                let fixed = parts
                    .iter()
                    .all(|(k, v)| matches!((k, v), (Key::Static(_), Template::Static(_))));
                if fixed {
                    Template::Static(value.clone())
                } else {
                    Template::Object(parts)
                }
            }
            other => Template::Static(other.clone()),
        })
    }

    fn parse_string(
        text: &str,
        path: &FieldPath,
        resolver: &dyn Resolve,
    ) -> Result<Self, (FieldPath, ErrorKind)> {
        Ok(match parse_pieces(text, path, resolver)? {
            None => Template::Static(Value::from(text)),
            Some(mut pieces) => {
                if let [Piece::Placeholder(_)] = pieces.as_slice() {
                    match pieces.pop() {
                        Some(Piece::Placeholder(p)) => Template::Whole(p),
                        _ => Template::Text(pieces),
                    }
                } else {
                    Template::Text(pieces)
                }
            }
        })
    }

    /// How many placeholders the template holds; used to bound rendered sizes at plan time.
    pub fn placeholder_count(&self) -> usize {
        match self {
            Template::Static(_) => 0,
            Template::Whole(_) => 1,
            Template::Text(pieces) => count_pieces(pieces),
            Template::Array(items) => items.iter().map(Template::placeholder_count).sum(),
            Template::Object(fields) => fields
                .iter()
                .map(|(key, value)| {
                    let key = match key {
                        Key::Static(_) => 0,
                        Key::Text(pieces) => count_pieces(pieces),
                    };
                    key + value.placeholder_count()
                })
                .sum(),
        }
    }

    pub fn render(&self, scope: &dyn Scope) -> Result<Value, (FieldPath, ErrorKind)> {
        Ok(match self {
            Template::Static(value) => value.clone(),
            Template::Whole(placeholder) => placeholder.value(scope)?,
            Template::Text(pieces) => Value::String(render_text(pieces, scope)?),
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.render(scope))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Object(fields) => {
                let mut map = Map::with_capacity(fields.len());
                for (key, value) in fields {
                    let key = match key {
                        Key::Static(key) => key.clone(),
                        Key::Text(pieces) => render_text(pieces, scope)?,
                    };
                    map.insert(key, value.render(scope)?);
                }
                Value::Object(map)
            }
        })
    }
}

fn count_pieces(pieces: &[Piece]) -> usize {
    pieces
        .iter()
        .filter(|p| matches!(p, Piece::Placeholder(_)))
        .count()
}

impl Placeholder {
    fn value(&self, scope: &dyn Scope) -> Result<Value, (FieldPath, ErrorKind)> {
        let fail = |kind| (self.path.clone(), kind);
        let base = match &self.slot {
            Slot::Index => return Ok(Value::from(scope.index())),
            Slot::Literal(value) => Cow::Borrowed(value),
            Slot::Var(k) => scope.var(*k).map_err(fail)?,
            Slot::Upstream(j) => Cow::Borrowed(scope.upstream(*j).map_err(fail)?),
        };
        if self.fields.is_empty() {
            return Ok(base.into_owned());
        }
        lookup_parts(&base, self.fields.iter().map(String::as_str))
            .cloned()
            .ok_or_else(|| {
                fail(ErrorKind::MissingVariableField {
                    name: self.name.clone(),
                    field: self.fields.join("."),
                })
            })
    }
}

fn render_text(pieces: &[Piece], scope: &dyn Scope) -> Result<String, (FieldPath, ErrorKind)> {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder(placeholder) => match placeholder.value(scope)? {
                Value::String(text) => out.push_str(&text),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Ok(out)
}

/// Splits a string into text and placeholders; `None` when it has no placeholder at all.
fn parse_pieces(
    text: &str,
    path: &FieldPath,
    resolver: &dyn Resolve,
) -> Result<Option<Vec<Piece>>, (FieldPath, ErrorKind)> {
    if !text.contains("{{") {
        return Ok(None);
    }
    let fail = |message: String| (path.clone(), ErrorKind::Template(message));
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| fail(format!("unclosed `{{{{` in template {text:?}")))?;
        let name = after[..end].trim();
        let parts: Vec<&str> = name.split('.').collect();
        let valid = parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        if !valid {
            return Err(fail(format!(
                "placeholder `{{{{{}}}}}` is not a variable name (letters, digits, `_`, `-`, joined by `.`)",
                &after[..end]
            )));
        }
        let (slot, used) = resolver
            .resolve(parts[0], &parts[1..])
            .map_err(|kind| (path.clone(), kind))?;
        pieces.push(Piece::Placeholder(Placeholder {
            name: name.to_string(),
            slot,
            fields: parts[1 + used..].iter().map(|s| s.to_string()).collect(),
            path: path.clone(),
        }));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(Some(pieces))
}
