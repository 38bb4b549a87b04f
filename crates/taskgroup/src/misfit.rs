//! Every misfit of a well-formed session document, not only serde's first: the top level, each
//! group and each task are read on their own, and read again past each misfit found.
//!
//! The reading goes through [`Reader`], a `serde_json::Value` deserializer whose error,
//! [`Misfit`], says which required field was missing as data, so the loop stops on a field it
//! took out itself without looking into a message.

use crate::error::Problem;
use crate::spec::{GroupSpec, SessionSpec, TaskSpec};
use serde::de::value::{MapAccessDeserializer, MapDeserializer, SeqDeserializer};
use serde::de::{self, Deserializer, IntoDeserializer, Unexpected, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Every place where the well-formed document `text` does not fit the session format, `first`
/// (serde's) among them: the top level, each group and each task are read
/// on their own, each for every misfit it holds. `Err(first)` when it is the only one.
pub(crate) fn every_misfit(
    text: &str,
    first: Problem,
) -> std::result::Result<Vec<Problem>, Problem> {
    let Ok(Value::Object(mut top)) = serde_json::from_str::<Value>(text) else {
        return Err(first);
    };
    let mut problems = vec![first];
    let groups = take_list(&mut top, "groups");
    misfit::<SessionSpec>(String::new(), Value::Object(top), &mut problems);
    for (g, group) in groups.into_iter().enumerate() {
        let Value::Object(mut group) = group else {
            misfit::<GroupSpec>(format!("groups[{g}]"), group, &mut problems);
            continue;
        };
        let tasks = take_list(&mut group, "tasks");
        misfit::<GroupSpec>(format!("groups[{g}]"), Value::Object(group), &mut problems);
        for (t, task) in tasks.into_iter().enumerate() {
            misfit::<TaskSpec>(format!("groups[{g}].tasks[{t}]"), task, &mut problems);
        }
    }
    if problems.len() == 1 {
        return Err(problems.remove(0));
    }
    Ok(problems)
}

/// The document `text` read with its unknown fields left out, when they are all that does not
/// fit: leaving out a field the format does not have changes nothing else, so the rest can be
/// checked too. `None` when any other misfit is found.
pub(crate) fn known_fields_only(text: &str) -> Option<SessionSpec> {
    let mut value: Value = serde_json::from_str(text).ok()?;
    loop {
        let error = match serde_path_to_error::deserialize::<_, SessionSpec>(Reader(value.clone()))
        {
            Ok(spec) => return Some(spec),
            Err(error) if error.inner().unknown => error,
            Err(_) => return None,
        };
        let mut segments: Vec<_> = error.path().iter().collect();
        let Some(serde_path_to_error::Segment::Map { key }) = segments.pop() else {
            return None;
        };
        let mut at = &mut value;
        for segment in segments {
            at = match segment {
                serde_path_to_error::Segment::Map { key } => at.get_mut(key)?,
                serde_path_to_error::Segment::Seq { index } => at.get_mut(*index)?,
                _ => return None,
            };
        }
        at.as_object_mut()?.remove(key)?;
    }
}

/// The list under `key`, left empty in its place; nothing when it is not a list (reading the
/// object reports that).
fn take_list(object: &mut Map<String, Value>, key: &str) -> Vec<Value> {
    match object.get_mut(key) {
        Some(Value::Array(items)) => std::mem::take(items),
        _ => Vec::new(),
    }
}

/// Reads `value`, at `prefix`, as a `T`; each misfit joins `problems` unless one is already
/// there for the same path. serde stops at an object's first misfit, so the field holding it
/// gets a stand-in of the right shape, or is taken out, and the object is read again, until it
/// fits or what is left cannot tell more: a required field taken out is then missing, which is
/// no misfit of the document's.
fn misfit<T: serde::de::DeserializeOwned>(
    prefix: String,
    mut value: Value,
    problems: &mut Vec<Problem>,
) {
    let mut removed: Vec<String> = Vec::new();
    loop {
        let Err(error) = serde_path_to_error::deserialize::<_, T>(Reader(value.clone())) else {
            return;
        };
        if let Some(missing) = error.inner().missing {
            if removed.iter().any(|field| field == missing) {
                return;
            }
        }
        let message = error.inner().message.clone();
        let inner = error.path().to_string();
        let path = match (prefix.is_empty(), inner.as_str()) {
            (_, ".") => prefix.clone(),
            (true, inner) => inner.to_string(),
            (false, inner) => format!("{prefix}.{inner}"),
        };
        if problems.iter().all(|known| known.path != path) {
            problems.push(Problem { path, message });
        }
        let field = match error.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => key.clone(),
            _ => return,
        };
        if !stand_in::<T>(&mut value, &field) {
            let Value::Object(object) = &mut value else {
                return;
            };
            if object.remove(&field).is_none() {
                return;
            }
            removed.push(field);
        }
    }
}

/// Puts a value of the right shape in place of `value`'s misfit `field` (an empty string, a
/// zero, an empty object or list, `false`), the first the reading gets past; false when none
/// fits.
fn stand_in<T: serde::de::DeserializeOwned>(value: &mut Value, field: &str) -> bool {
    let Value::Object(object) = value else {
        return false;
    };
    let candidates = [
        Value::String(String::new()),
        Value::from(0),
        Value::Object(Map::new()),
        Value::Array(Vec::new()),
        Value::Bool(false),
    ];
    for candidate in candidates {
        let mut trial = object.clone();
        trial.insert(field.to_string(), candidate);
        let gets_past =
            match serde_path_to_error::deserialize::<_, T>(Reader(Value::Object(trial.clone()))) {
                Ok(_) => true,
                Err(error) => !matches!(
                    error.path().iter().next(),
                    Some(serde_path_to_error::Segment::Map { key }) if key == field
                ),
            };
        if gets_past {
            *object = trial;
            return true;
        }
    }
    false
}

/// Why a value did not read: the message serde builds, the field when a required one was
/// missing, and whether the field read is one the format does not have.
#[derive(Debug)]
struct Misfit {
    message: String,
    missing: Option<&'static str>,
    unknown: bool,
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Misfit {}

impl de::Error for Misfit {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Misfit {
            message: message.to_string(),
            missing: None,
            unknown: false,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Misfit {
            message: <de::value::Error as de::Error>::missing_field(field).to_string(),
            missing: Some(field),
            unknown: false,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        // serde's own words for it.
        let words = <de::value::Error as de::Error>::unknown_field(field, expected);
        Misfit {
            message: words.to_string(),
            missing: None,
            unknown: true,
        }
    }
}

/// A JSON value read as serde_json reads one (the same visits, so the same messages), with
/// [`Misfit`] as the error.
struct Reader(Value);

impl<'de> IntoDeserializer<'de, Misfit> for Reader {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

fn entries(object: Map<String, Value>) -> impl Iterator<Item = (String, Reader)> {
    object.into_iter().map(|(key, value)| (key, Reader(value)))
}

impl<'de> Deserializer<'de> for Reader {
    type Error = Misfit;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => visitor.visit_u64(u),
                (None, Some(i)) => visitor.visit_i64(i),
                (None, None) => visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter().map(Reader));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(object) => {
                let mut map = MapDeserializer::new(entries(object));
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Misfit> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Misfit> {
        match self.0 {
            Value::String(variant) => visitor.visit_enum(variant.into_deserializer()),
            Value::Object(object) if object.len() == 1 => visitor.visit_enum(
                MapAccessDeserializer::new(MapDeserializer::new(entries(object))),
            ),
            Value::Object(_) => Err(de::Error::invalid_value(
                Unexpected::Map,
                &"a map with a single key",
            )),
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"string or map",
            )),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            (None, None) => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The reader's messages are serde_json's own, and a missing field is told as data.
    #[test]
    fn reads_as_serde_json_does_and_names_the_missing_field() {
        let cases = [
            json!({"groups": 5}),
            json!({"groups": [], "timeout_ms": "soon"}),
            json!({"groups": [], "timeout_ms": -1}),
            json!({"groups": [], "extra": true}),
            json!({"groups": [{"id": "g", "tasks": [{"id": "t"}]}]}),
            json!({"groups": [{"id": "g", "tasks": [{"id": "t", "executor": "noop",
                "retry_policy": {"max_retries": "x"}}]}]}),
        ];
        for case in cases {
            let ours = serde_path_to_error::deserialize::<_, SessionSpec>(Reader(case.clone()))
                .unwrap_err();
            let theirs = serde_path_to_error::deserialize::<_, SessionSpec>(case).unwrap_err();
            assert_eq!(ours.path().to_string(), theirs.path().to_string());
            assert_eq!(ours.inner().message, theirs.inner().to_string());
        }
        let error =
            serde_path_to_error::deserialize::<_, SessionSpec>(Reader(json!({}))).unwrap_err();
        assert_eq!(error.inner().missing, Some("groups"));
        assert_eq!(error.inner().message, "missing field `groups`");
    }
}
