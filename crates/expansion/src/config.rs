//! Parses an `expansion_config` object strictly: unknown fields, wrong types and bad values are
//! errors at their exact field path. Nothing here looks at the task input; `plan` does that.

use crate::error::{Error, ErrorKind, Result, Site};
use crate::output::OutputFormat;
use crate::path::{type_name, FieldPath};
use crate::predicate::Predicate;
use serde_json::{Map, Value};

/// The kind of fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpansionType {
    /// One instance per element of one array.
    Array,
    /// The cross product of several arrays, row-major in the mapping's key order.
    Matrix,
    /// Several arrays of equal length advanced together: instance `i` takes element `i` of each.
    Zip,
    /// `transform_rules`: combine, filter, field mappings and conditions over a source object.
    Custom,
    /// One instance per number of a range such as `"1-5,10,12"`, in the order written.
    Range,
}

impl ExpansionType {
    /// The name a session file uses for this kind (`"array"`, `"matrix"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ExpansionType::Array => "array",
            ExpansionType::Matrix => "matrix",
            ExpansionType::Zip => "zip",
            ExpansionType::Custom => "custom",
            ExpansionType::Range => "range",
        }
    }
}

/// Conditions: the combination is kept when any alternative holds; an alternative holds when all
/// of its predicates do.
pub(crate) type Conditions = Vec<Vec<(String, Predicate)>>;

#[derive(Debug, Clone)]
pub(crate) struct CustomRules {
    pub source: Option<String>,
    pub combine: Vec<String>,
    pub filter: Vec<(String, Predicate)>,
    pub field_mappings: Option<Vec<(String, String)>>,
    pub conditions: Conditions,
}

/// Where a range expansion's numbers come from.
#[derive(Debug, Clone)]
pub(crate) enum RangeSource {
    /// A range written in the config, `"1-5,10"`.
    Text(String),
    /// A list of numbers written in the config.
    List(Vec<Value>),
    /// A range string or a list of numbers in the session context, at this dotted path.
    Context(String),
}

#[derive(Debug, Clone)]
pub(crate) struct RangeSpec {
    pub variable: String,
    pub source: RangeSource,
}

#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub kind: ExpansionType,
    /// Variable name to source path, in the order written (array, matrix, zip).
    pub mapping: Vec<(String, String)>,
    pub output: OutputFormat,
    pub allow_empty: bool,
    pub zip: Vec<Vec<String>>,
    pub include: Vec<Map<String, Value>>,
    pub exclude: Vec<Map<String, Value>>,
    pub custom: Option<CustomRules>,
    pub range: Option<RangeSpec>,
}

const ARRAY_FIELDS: &[&str] = &[
    "type",
    "output_format",
    "allow_empty",
    "include",
    "exclude",
    "array_mapping",
];
const MATRIX_FIELDS: &[&str] = &[
    "type",
    "output_format",
    "allow_empty",
    "include",
    "exclude",
    "array_mapping",
    "zip",
];
const CUSTOM_FIELDS: &[&str] = &[
    "type",
    "output_format",
    "allow_empty",
    "include",
    "exclude",
    "transform_rules",
    "zip",
];
const RANGE_FIELDS: &[&str] = &["type", "output_format", "allow_empty", "range", "variable"];
const RULE_FIELDS: &[&str] = &[
    "source",
    "combine",
    "filter",
    "field_mappings",
    "conditions",
];

/// Names the engine gives meaning to; a mapping may not use them as variable names.
pub(crate) const RESERVED: [&str; 2] = ["index", "context"];

pub(crate) fn parse(config: &Value, path: &FieldPath, site: &Site) -> Result<Spec> {
    let object = expect_object(config, path, site)?;
    let kind = expansion_type(object, path, site)?;
    let allowed = match kind {
        ExpansionType::Array => ARRAY_FIELDS,
        ExpansionType::Matrix | ExpansionType::Zip => MATRIX_FIELDS,
        ExpansionType::Custom => CUSTOM_FIELDS,
        ExpansionType::Range => RANGE_FIELDS,
    };
    reject_unknown(object, allowed, path, site)?;

    let output = output_format(object, path, site)?;
    let allow_empty = match object.get("allow_empty") {
        None => false,
        Some(Value::Bool(flag)) => *flag,
        Some(other) => {
            return Err(wrong_type(
                site,
                &path.key("allow_empty"),
                "a boolean",
                other,
            ))
        }
    };

    let mut spec = Spec {
        kind,
        mapping: Vec::new(),
        output,
        allow_empty,
        zip: Vec::new(),
        include: object_list(object, "include", path, site)?,
        exclude: object_list(object, "exclude", path, site)?,
        custom: None,
        range: None,
    };
    if let Some(groups) = object.get("zip") {
        spec.zip = parse_zip(groups, &path.key("zip"), site)?;
    }
    match kind {
        ExpansionType::Custom => {
            let at = path.key("transform_rules");
            let rules = object
                .get("transform_rules")
                .ok_or_else(|| site.error(path, ErrorKind::MissingField("transform_rules")))?;
            spec.custom = Some(parse_rules(rules, &at, site)?);
        }
        ExpansionType::Range => spec.range = Some(parse_range(object, path, site)?),
        ExpansionType::Array | ExpansionType::Matrix | ExpansionType::Zip => {
            spec.mapping = array_mapping(object, kind, path, site)?;
        }
    }
    Ok(spec)
}

/// `type`: one of the expansion types.
fn expansion_type(
    object: &Map<String, Value>,
    path: &FieldPath,
    site: &Site,
) -> Result<ExpansionType> {
    let type_path = path.key("type");
    Ok(match object.get("type") {
        None => return Err(site.error(path, ErrorKind::MissingField("type"))),
        Some(Value::String(name)) => match name.as_str() {
            "array" => ExpansionType::Array,
            "matrix" => ExpansionType::Matrix,
            "zip" => ExpansionType::Zip,
            "custom" => ExpansionType::Custom,
            "range" => ExpansionType::Range,
            other => {
                return Err(site.invalid(
                    &type_path,
                    format!(
                        "unknown expansion type `{other}` (expected array, matrix, zip, custom or range)"
                    ),
                ))
            }
        },
        Some(other) => return Err(wrong_type(site, &type_path, "a string", other)),
    })
}

/// `output_format`: separate (the default), merge or single.
fn output_format(
    object: &Map<String, Value>,
    path: &FieldPath,
    site: &Site,
) -> Result<OutputFormat> {
    Ok(match object.get("output_format") {
        None => OutputFormat::Separate,
        Some(value) => {
            let at = path.key("output_format");
            let name = value
                .as_str()
                .ok_or_else(|| wrong_type(site, &at, "a string", value))?;
            OutputFormat::parse(name).ok_or_else(|| {
                site.invalid(
                    &at,
                    format!("unknown output format `{name}` (expected separate, merge or single)"),
                )
            })?
        }
    })
}

/// `array_mapping` of an array, matrix or zip expansion: variable names to input paths, one for
/// an array.
fn array_mapping(
    object: &Map<String, Value>,
    kind: ExpansionType,
    path: &FieldPath,
    site: &Site,
) -> Result<Vec<(String, String)>> {
    let at = path.key("array_mapping");
    let mapping = object
        .get("array_mapping")
        .ok_or_else(|| site.error(path, ErrorKind::MissingField("array_mapping")))?;
    let mapping = string_map(mapping, &at, site)?;
    check_variable_names(mapping.iter().map(|(k, _)| k.as_str()), &at, site)?;
    if mapping.is_empty() {
        return Err(site.invalid(&at, "array_mapping names no arrays"));
    }
    if kind == ExpansionType::Array && mapping.len() != 1 {
        return Err(site.invalid(
            &at,
            format!(
                "an array expansion maps exactly one array, found {} (use type matrix for a cross product or zip to pair arrays)",
                mapping.len()
            ),
        ));
    }
    Ok(mapping)
}

fn parse_range(object: &Map<String, Value>, path: &FieldPath, site: &Site) -> Result<RangeSpec> {
    let variable = match object.get("variable") {
        None => return Err(site.error(path, ErrorKind::MissingField("variable"))),
        Some(Value::String(name)) => name.clone(),
        Some(other) => return Err(wrong_type(site, &path.key("variable"), "a string", other)),
    };
    if let Some(problem) = variable_problem(&variable) {
        return Err(site.invalid(&path.key("variable"), problem));
    }
    let source = match object.get("range") {
        None => return Err(site.error(path, ErrorKind::MissingField("range"))),
        Some(Value::String(text)) => match text.strip_prefix("context.") {
            Some(key) if !key.is_empty() => RangeSource::Context(key.to_string()),
            _ => RangeSource::Text(text.clone()),
        },
        Some(Value::Array(items)) => RangeSource::List(items.clone()),
        Some(other) => {
            return Err(wrong_type(
                site,
                &path.key("range"),
                "a range string, a list of numbers or a `context.` path",
                other,
            ))
        }
    };
    Ok(RangeSpec { variable, source })
}

fn parse_rules(rules: &Value, path: &FieldPath, site: &Site) -> Result<CustomRules> {
    let object = expect_object(rules, path, site)?;
    reject_unknown(object, RULE_FIELDS, path, site)?;
    let source = match object.get("source") {
        None => None,
        Some(Value::String(source)) => Some(source.clone()),
        Some(other) => return Err(wrong_type(site, &path.key("source"), "a string", other)),
    };
    let combine = match object.get("combine") {
        None => Vec::new(),
        Some(value) => string_list(value, &path.key("combine"), site)?,
    };
    let filter = match object.get("filter") {
        None => Vec::new(),
        Some(value) => predicates(value, &path.key("filter"), site)?,
    };
    let field_mappings = match object.get("field_mappings") {
        None => None,
        Some(value) => {
            let at = path.key("field_mappings");
            let mappings = string_map(value, &at, site)?;
            check_variable_names(mappings.iter().map(|(k, _)| k.as_str()), &at, site)?;
            Some(mappings)
        }
    };
    let conditions = match object.get("conditions") {
        None => Vec::new(),
        Some(Value::Array(alternatives)) => {
            let at = path.key("conditions");
            alternatives
                .iter()
                .enumerate()
                .map(|(i, alternative)| predicates(alternative, &at.index(i), site))
                .collect::<Result<_>>()?
        }
        Some(value) => vec![predicates(value, &path.key("conditions"), site)?],
    };
    Ok(CustomRules {
        source,
        combine,
        filter,
        field_mappings,
        conditions,
    })
}

fn parse_zip(groups: &Value, path: &FieldPath, site: &Site) -> Result<Vec<Vec<String>>> {
    let Value::Array(items) = groups else {
        return Err(wrong_type(
            site,
            path,
            "a list of lists of variable names",
            groups,
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, group)| {
            let at = path.index(i);
            let names = string_list(group, &at, site)?;
            if names.len() < 2 {
                return Err(site.invalid(&at, "a zip group pairs at least two variables"));
            }
            Ok(names)
        })
        .collect()
}

fn predicates(value: &Value, path: &FieldPath, site: &Site) -> Result<Vec<(String, Predicate)>> {
    let object = expect_object(value, path, site)?;
    object
        .iter()
        .map(|(name, spec)| {
            Predicate::parse(spec)
                .map(|predicate| (name.clone(), predicate))
                .map_err(|message| site.invalid(&path.key(name), message))
        })
        .collect()
}

fn object_list(
    object: &Map<String, Value>,
    field: &'static str,
    path: &FieldPath,
    site: &Site,
) -> Result<Vec<Map<String, Value>>> {
    let Some(value) = object.get(field) else {
        return Ok(Vec::new());
    };
    let at = path.key(field);
    let Value::Array(items) = value else {
        return Err(wrong_type(site, &at, "a list of objects", value));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| expect_object(item, &at.index(i), site).cloned())
        .collect()
}

fn string_map(value: &Value, path: &FieldPath, site: &Site) -> Result<Vec<(String, String)>> {
    let object = expect_object(value, path, site)?;
    object
        .iter()
        .map(|(key, value)| match value {
            Value::String(text) if !text.is_empty() => Ok((key.clone(), text.clone())),
            Value::String(_) => Err(site.invalid(&path.key(key), "empty path")),
            other => Err(wrong_type(site, &path.key(key), "a path string", other)),
        })
        .collect()
}

fn string_list(value: &Value, path: &FieldPath, site: &Site) -> Result<Vec<String>> {
    let Value::Array(items) = value else {
        return Err(wrong_type(site, path, "a list of strings", value));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(text) => Ok(text.clone()),
            other => Err(wrong_type(site, &path.index(i), "a string", other)),
        })
        .collect()
}

fn check_variable_names<'a>(
    names: impl Iterator<Item = &'a str>,
    path: &FieldPath,
    site: &Site,
) -> Result<()> {
    for name in names {
        if let Some(problem) = variable_problem(name) {
            return Err(site.invalid(&path.key(name), problem));
        }
    }
    Ok(())
}

/// Why `name` cannot name a variable, if it cannot.
fn variable_problem(name: &str) -> Option<String> {
    if RESERVED.contains(&name) {
        return Some(format!("`{name}` is reserved and cannot name a variable"));
    }
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (!valid).then(|| format!("`{name}` is not a variable name (letters, digits, `_` and `-` only)"))
}

pub(crate) fn expect_object<'v>(
    value: &'v Value,
    path: &FieldPath,
    site: &Site,
) -> Result<&'v Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| wrong_type(site, path, "an object", value))
}

fn reject_unknown(
    object: &Map<String, Value>,
    allowed: &'static [&'static str],
    path: &FieldPath,
    site: &Site,
) -> Result<()> {
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        None => Ok(()),
        Some(field) => Err(site.error(
            &path.key(field),
            ErrorKind::UnknownField {
                field: field.clone(),
                allowed,
            },
        )),
    }
}

pub(crate) fn wrong_type(
    site: &Site,
    path: &FieldPath,
    expected: &'static str,
    found: &Value,
) -> Error {
    site.error(
        path,
        ErrorKind::WrongType {
            expected,
            found: type_name(found),
        },
    )
}
