//! Field paths for error messages (`groups[1].tasks[0].expansion_config.array_mapping.col`) and
//! dotted lookups into JSON values (`data.users`, `user.name`, `items.0`).

use serde_json::Value;
use std::fmt;

/// Where a value sits in the document a person wrote, so an error can point at it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// The document root; displays as `$`.
    pub fn root() -> Self {
        Self::default()
    }

    /// The path of field `name` inside this one.
    pub fn key(&self, name: &str) -> Self {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let mut path = self.0.clone();
        if plain {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name);
        } else {
            // Keys with dots or spaces would make the dotted form ambiguous.
            path.push_str(&format!("[{}]", Value::from(name)));
        }
        Self(path)
    }

    /// The path of element `index` inside this array.
    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// Appends a dotted path written by a user (`data.users`).
    pub fn dotted(&self, dotted: &str) -> Self {
        dotted
            .split('.')
            .fold(self.clone(), |path, part| path.key(part))
    }

    /// The path as text, `$` for the root.
    pub fn as_str(&self) -> &str {
        if self.0.is_empty() {
            "$"
        } else {
            &self.0
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Follows a dotted path (`user.name`, `items.0`); numeric parts index arrays.
pub fn lookup<'v>(root: &'v Value, dotted: &str) -> Option<&'v Value> {
    lookup_parts(root, dotted.split('.'))
}

pub(crate) fn lookup_parts<'v, 'p>(
    root: &'v Value,
    parts: impl IntoIterator<Item = &'p str>,
) -> Option<&'v Value> {
    parts.into_iter().try_fold(root, |value, part| match value {
        Value::Object(map) => map.get(part),
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Removes the value at a dotted path, if it is there; used to drop the arrays an expansion consumes.
pub(crate) fn remove(root: &mut Value, dotted: &str) {
    let (parent, leaf) = match dotted.rsplit_once('.') {
        Some((parent, leaf)) => (lookup_mut(root, parent), leaf),
        None => (Some(root), dotted),
    };
    if let Some(Value::Object(map)) = parent {
        map.shift_remove(leaf);
    }
}

fn lookup_mut<'v>(root: &'v mut Value, dotted: &str) -> Option<&'v mut Value> {
    dotted.split('.').try_fold(root, |value, part| match value {
        Value::Object(map) => map.get_mut(part),
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

/// The JSON type name of a value, as error messages say it.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The length of a value serialized as compact JSON, without building the string.
pub fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` into an infallible sink cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_display_like_a_person_writes_them() {
        let path = FieldPath::root()
            .key("groups")
            .index(1)
            .key("tasks")
            .index(0)
            .key("expansion_config")
            .key("array_mapping")
            .key("col");
        assert_eq!(
            path.to_string(),
            "groups[1].tasks[0].expansion_config.array_mapping.col"
        );
        assert_eq!(FieldPath::root().key("a b").to_string(), "[\"a b\"]");
        assert_eq!(FieldPath::root().to_string(), "$");
    }

    #[test]
    fn lookup_follows_objects_and_array_indices() {
        let doc = json!({"data": {"users": [{"name": "Ann"}]}});
        assert_eq!(lookup(&doc, "data.users.0.name"), Some(&json!("Ann")));
        assert_eq!(lookup(&doc, "data.nope"), None);
        assert_eq!(lookup(&doc, "data.users.x"), None);
    }

    #[test]
    fn remove_drops_a_nested_leaf() {
        let mut doc = json!({"data": {"users": [1], "keep": 2}, "other": 3});
        remove(&mut doc, "data.users");
        remove(&mut doc, "other");
        assert_eq!(doc, json!({"data": {"keep": 2}}));
    }

    #[test]
    fn json_len_matches_serialization() {
        let doc = json!({"a": [1, "two", null], "b": {"c": 1.5}});
        assert_eq!(
            json_len(&doc),
            serde_json::to_string(&doc).map(|s| s.len()).unwrap_or(0)
        );
    }
}
