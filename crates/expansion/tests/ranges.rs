//! Range expansions: one instance per number, in the order written, from the config or the
//! context; every bad range is an error at `expansion_config.range`.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use expansion::{ErrorKind, Limits};
use serde_json::{json, Value};

fn range(range: Value) -> Value {
    json!({
        "name": "item-{{task_id}}",
        "expansion_config": {"type": "range", "range": range, "variable": "task_id"}
    })
}

#[test]
fn one_instance_per_number_in_the_order_written() {
    let instances = expand(range(json!("1-3,10,12, 14")));
    let ids: Vec<&Value> = instances.iter().map(|i| &i["task_id"]).collect();
    assert_eq!(
        ids,
        [1, 2, 3, 10, 12, 14]
            .map(Value::from)
            .iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        instances[3],
        json!({"name": "item-10", "task_id": 10}),
        "the number is a template variable and a field of the instance"
    );
}

#[test]
fn a_list_of_numbers_works_as_a_range() {
    let instances = expand(range(json!([7, 3, 4])));
    let ids: Vec<&Value> = instances.iter().map(|i| &i["task_id"]).collect();
    assert_eq!(ids, [&json!(7), &json!(3), &json!(4)]);
}

#[test]
fn a_range_may_come_from_the_context() {
    let input = range(json!("context.selection.ids"));
    for (selection, expected) in [(json!("5-7"), vec![5, 6, 7]), (json!([2, 9]), vec![2, 9])] {
        let context = json!({"selection": {"ids": selection}});
        let expansion = plan_with(&input, &context, &Limits::default()).unwrap();
        assert_eq!(expansion.context_keys(), ["selection"]);
        let ids: Vec<Value> = render_all(&expansion)
            .into_iter()
            .map(|i| i["task_id"].clone())
            .collect();
        assert_eq!(
            ids,
            expected.into_iter().map(Value::from).collect::<Vec<_>>()
        );
    }
    let error = plan_error(input.clone());
    assert!(
        matches!(&error.kind, ErrorKind::ContextMissing { key } if key == "selection.ids"),
        "a missing context key is known at run time: {error}"
    );
    let error = plan_error_in(input, json!({"selection": {"ids": {"from": 1}}}));
    assert_eq!(
        error.to_string(),
        "task `t` at groups[1].tasks[0].input.expansion_config.range: `context.selection.ids`: must be a range string or a list of numbers, found object"
    );
}

#[test]
fn a_range_of_millions_is_addressed_without_being_built() {
    let expansion = plan(range(json!("0-4999999,10000000-14999999")));
    assert_eq!(expansion.len(), 10_000_000);
    let last = expansion.get(9_999_999).unwrap();
    assert_eq!(
        expansion.value(&last, 0).unwrap().as_u64(),
        Some(14_999_999)
    );
    let middle: Vec<u64> = expansion
        .range(4_999_999..5_000_001)
        .map(|i| expansion.value(&i, 0).unwrap().as_u64().unwrap())
        .collect();
    assert_eq!(middle, [4_999_999, 10_000_000]);
}

#[test]
fn every_bad_range_names_the_field_and_the_reason() {
    let at = "task `t` at groups[1].tasks[0].input.expansion_config.range: ";
    let cases = [
        (
            json!("5-1"),
            "`5-1` runs backwards (write `1-5`; runs go up)",
        ),
        (json!("1-"), "`1-` has no last number"),
        (
            json!("a-b"),
            "`a` in `a-b` is not a number (digits only, no signs)",
        ),
        (
            json!("1-99999999999999999999"),
            "`99999999999999999999` in `1-99999999999999999999` does not fit in 64 bits",
        ),
        (json!("1-3,2"), "2 appears more than once"),
        (
            json!(""),
            "the range is empty (write numbers and runs like `1-5,10,12`)",
        ),
        (
            json!([1, "2"]),
            "element 1 is \"2\", not a non-negative integer that fits in 64 bits",
        ),
    ];
    for (bad, reason) in cases {
        assert_eq!(
            plan_error(range(bad.clone())).to_string(),
            format!("{at}{reason}"),
            "{bad}"
        );
    }
    assert_eq!(
        plan_error(range(json!(15))).to_string(),
        format!(
            "{at}expected a range string, a list of numbers or a `context.` path, found number"
        )
    );
}

#[test]
fn a_range_over_the_instance_limit_is_refused() {
    let limits = Limits {
        max_instances: 100,
        ..Limits::default()
    };
    let error = plan_with(&range(json!("1-50,100-150")), &json!({}), &limits).unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::TooManyInstances {
            count: 101,
            limit: 100
        }
    );
    assert_eq!(
        error.path.to_string(),
        "groups[1].tasks[0].input.expansion_config"
    );
}

#[test]
fn the_config_is_checked_strictly() {
    let config = |extra: Value| {
        let mut config = json!({"type": "range", "range": "1-3"});
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"expansion_config": config})
    };
    assert!(plan_error(config(json!({})))
        .to_string()
        .ends_with("expansion_config: missing field `variable`"));
    assert!(plan_error(config(json!({"variable": "index"})))
        .to_string()
        .ends_with("expansion_config.variable: `index` is reserved and cannot name a variable"));
    assert!(plan_error(config(json!({"variable": "n", "array_mapping": {}})))
        .to_string()
        .ends_with("unknown field `array_mapping` (expected one of: type, output_format, allow_empty, range, variable)"));
    let empty = plan_with(
        &config(json!({"variable": "n", "range": [], "allow_empty": true})),
        &json!({}),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(empty.len(), 0);
    assert!(plan_error(config(json!({"variable": "n", "range": []})))
        .to_string()
        .contains("expansion is empty: the range has no elements"));
}
