//! Every error path: each names the task, the field path and what is wrong.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use expansion::{ErrorKind, Limits};
use serde_json::{json, Value};

fn message(input: Value) -> String {
    plan_error(input).to_string()
}

fn matrix(mapping: Value, extra: Value) -> Value {
    let mut config = json!({"type": "matrix", "array_mapping": mapping});
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"rows": ["A", "B"], "cols": [1, 2], "expansion_config": config})
}

#[test]
fn missing_array_names_the_mapping_path() {
    assert_eq!(
        message(matrix(json!({"row": "rows", "col": "columns"}), json!({}))),
        "task `t` at groups[1].tasks[0].input.expansion_config.array_mapping.col: `columns` not found in the task input"
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    assert_eq!(
        message(json!({"rows": "AB", "expansion_config": {"type": "array", "array_mapping": {"r": "rows"}}})),
        "task `t` at groups[1].tasks[0].input.expansion_config.array_mapping.r: `rows` must be an array, found string"
    );
    assert_eq!(
        message(json!({"expansion_config": {"type": "array", "array_mapping": ["rows"]}})),
        "task `t` at groups[1].tasks[0].input.expansion_config.array_mapping: expected an object, found array"
    );
    assert_eq!(
        message(json!({"expansion_config": {"type": 3}})),
        "task `t` at groups[1].tasks[0].input.expansion_config.type: expected a string, found number"
    );
    assert!(
        message(json!({"expansion_config": "array"})).ends_with("expected an object, found string")
    );
    assert!(
        message(json!({"expansion_config": {"type": "array", "array_mapping": {"x": 1}}}))
            .ends_with("array_mapping.x: expected a path string, found number")
    );
}

#[test]
fn unknown_fields_and_values_list_what_is_allowed() {
    assert_eq!(
        message(matrix(json!({"row": "rows"}), json!({"ouput_format": "merge"}))),
        "task `t` at groups[1].tasks[0].input.expansion_config.ouput_format: unknown field `ouput_format` (expected one of: type, output_format, allow_empty, include, exclude, array_mapping, zip)"
    );
    assert!(message(matrix(json!({"row": "rows"}), json!({"type": "grid"})))
        .ends_with("expansion_config.type: unknown expansion type `grid` (expected array, matrix, zip, custom or range)"));
    assert!(message(matrix(json!({"row": "rows"}), json!({"output_format": "all"})))
        .ends_with("expansion_config.output_format: unknown output format `all` (expected separate, merge or single)"));
    assert!(message(json!({"data": {}, "expansion_config": {"type": "custom", "transform_rules": {"combin": []}}}))
        .contains("transform_rules.combin: unknown field `combin`"));
    assert!(message(json!({"expansion_config": {}}))
        .ends_with("expansion_config: missing field `type`"));
    assert!(message(json!({"expansion_config": {"type": "matrix"}}))
        .ends_with("missing field `array_mapping`"));
}

#[test]
fn array_takes_exactly_one_mapping() {
    assert!(message(json!({"a": [1], "b": [2], "expansion_config": {"type": "array", "array_mapping": {"a": "a", "b": "b"}}}))
        .contains("an array expansion maps exactly one array, found 2"));
    assert!(
        message(json!({"expansion_config": {"type": "matrix", "array_mapping": {}}}))
            .ends_with("array_mapping names no arrays")
    );
}

#[test]
fn reserved_and_malformed_variable_names_are_refused() {
    assert!(message(
        json!({"a": [1], "expansion_config": {"type": "array", "array_mapping": {"index": "a"}}})
    )
    .ends_with("array_mapping.index: `index` is reserved and cannot name a variable"));
    assert!(message(
        json!({"a": [1], "expansion_config": {"type": "array", "array_mapping": {"a.b": "a"}}})
    )
    .contains("is not a variable name"));
}

#[test]
fn unresolved_template_variables_name_the_task_and_the_variable() {
    let error = plan_error(json!({
        "users": [1],
        "prompt": "hello {{usr}}",
        "expansion_config": {"type": "array", "array_mapping": {"user": "users"}}
    }));
    assert_eq!(
        error.to_string(),
        "task `t` at groups[1].tasks[0].input.prompt: unknown variable `usr` in template (known: user, index, context.<key>)"
    );
    assert!(message(json!({"p": "{{ x"})).ends_with("input.p: unclosed `{{` in template \"{{ x\""));
    assert!(message(json!({"p": "{{}}"})).contains("is not a variable name"));
    assert!(message(json!({"p": "{{index.x}}"})).ends_with("`index` is a number and has no fields"));
}

#[test]
fn missing_context_is_its_own_kind_so_planners_can_defer() {
    let error = plan_error(json!({"p": "{{context.fetch_users}}"}));
    assert_eq!(
        error.kind,
        ErrorKind::ContextMissing {
            key: "fetch_users".into()
        }
    );
    let error = plan_error(
        json!({"expansion_config": {"type": "array", "array_mapping": {"u": "context.users.list"}}}),
    );
    assert_eq!(
        error.kind,
        ErrorKind::ContextMissing {
            key: "users.list".into()
        }
    );
    assert_eq!(
        error.path.to_string(),
        "groups[1].tasks[0].input.expansion_config.array_mapping.u"
    );
}

#[test]
fn a_missing_field_below_a_variable_is_an_instance_error() {
    let expansion = plan(json!({
        "users": [{"name": "Ann"}, {"id": 2}],
        "who": "{{user.name}}",
        "expansion_config": {"type": "array", "array_mapping": {"user": "users"}}
    }));
    let second = expansion.get(1).unwrap();
    assert_eq!(
        expansion.render(&second).unwrap_err().to_string(),
        "task `t` instance 1 at groups[1].tasks[0].input.who: variable `user.name` has no field `name`"
    );
}

#[test]
fn empty_expansions_are_errors_unless_allowed() {
    assert_eq!(
        message(json!({"xs": [], "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}})),
        "task `t` at groups[1].tasks[0].input.expansion_config: expansion is empty: `xs` has no elements (set \"allow_empty\": true to allow zero instances)"
    );
    assert!(message(json!({
        "data": {"years": [2020]},
        "expansion_config": {"type": "custom", "transform_rules": {"combine": ["years"], "filter": {"years": ">2021"}}}
    }))
    .contains("`years` after filtering has no elements"));
    assert!(message(matrix(
        json!({"row": "rows"}),
        json!({"exclude": [{"row": "A"}, {"row": "B"}]})
    ))
    .contains("exclude and conditions removed every combination"));
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let input = matrix(json!({"row": "rows", "col": "cols"}), json!({}));
    let limits = Limits {
        max_instances: 3,
        ..Limits::default()
    };
    let error = plan_with(&input, &json!({}), &limits).unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::TooManyInstances { count: 4, limit: 3 }
    );

    let limits = Limits {
        max_combinations: 3,
        ..Limits::default()
    };
    let excluding = matrix(
        json!({"row": "rows", "col": "cols"}),
        json!({"exclude": [{"row": "A"}]}),
    );
    assert!(plan_with(&excluding, &json!({}), &limits)
        .unwrap_err()
        .to_string()
        .contains("must test 4 combinations, over the limit of 3"));

    let big = json!({
        "xs": ["x".repeat(100), "y"],
        "copy": "{{x}}{{x}}",
        "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}
    });
    let limits = Limits {
        max_rendered_bytes: 150,
        ..Limits::default()
    };
    let expansion = plan_with(&big, &json!({}), &limits).unwrap();
    let error = expansion.render(&expansion.get(0).unwrap()).unwrap_err();
    assert!(
        matches!(error.kind, ErrorKind::RenderedTooLarge { limit: 150, .. }),
        "{error}"
    );
    assert!(expansion.render(&expansion.get(1).unwrap()).is_ok());
}

#[test]
fn products_that_overflow_are_refused_before_anything_is_built() {
    // 2^16 elements in each of 5 dimensions is 2^80 combinations.
    let axis: Vec<u8> = vec![0; 1 << 16];
    let error = plan_error(json!({
        "a": axis, "b": axis, "c": axis, "d": axis, "e": axis,
        "expansion_config": {"type": "matrix", "array_mapping": {"a": "a", "b": "b", "c": "c", "d": "d", "e": "e"}}
    }));
    assert_eq!(
        error.kind,
        ErrorKind::Overflow("65536 x 65536 x 65536 x 65536 x 65536 combinations".into())
    );
}

#[test]
fn zip_errors() {
    assert!(message(json!({"a": [1, 2], "b": [1], "expansion_config": {"type": "zip", "array_mapping": {"a": "a", "b": "b"}}}))
        .ends_with("expansion_config.zip: zipped arrays differ in length: `a` has 2 elements, `b` has 1"));
    assert!(message(matrix(
        json!({"row": "rows", "col": "cols"}),
        json!({"zip": [["row", "nope"]]})
    ))
    .contains("zip[0][1]: unknown variable `nope`"));
    assert!(message(matrix(
        json!({"row": "rows", "col": "cols"}),
        json!({"zip": [["row"]]})
    ))
    .ends_with("zip[0]: a zip group pairs at least two variables"));
    assert!(message(matrix(
        json!({"row": "rows", "col": "cols"}),
        json!({"zip": [["row", "col"], ["col", "row"]]})
    ))
    .contains("is in more than one zip group"));
}

#[test]
fn include_and_exclude_must_name_variables() {
    assert!(message(matrix(
        json!({"row": "rows", "col": "cols"}),
        json!({"include": [{"row": "C"}]})
    ))
    .ends_with("include[0]: an include entry gives every variable; `col` is missing"));
    assert!(message(matrix(
        json!({"row": "rows", "col": "cols"}),
        json!({"include": [{"row": "C", "col": 1, "x": 1}]})
    ))
    .contains("include[0].x: unknown variable `x`"));
    assert!(message(matrix(
        json!({"row": "rows", "col": "cols"}),
        json!({"exclude": [{"rw": "A"}]})
    ))
    .contains("exclude[0].rw: unknown variable `rw`"));
    assert!(message(matrix(
        json!({"row": "rows", "col": "cols"}),
        json!({"include": ["C"]})
    ))
    .ends_with("include[0]: expected an object, found string"));
}

#[test]
fn custom_errors_point_into_transform_rules() {
    let custom = |rules: Value| json!({"data": {"a": [1, 2], "b": 3}, "expansion_config": {"type": "custom", "transform_rules": rules}});
    assert!(message(custom(json!({"combine": ["a", "z"]})))
        .contains("transform_rules.combine[1]: no field `z` in the source (fields: a, b)"));
    assert!(message(custom(json!({"combine": ["b"]})))
        .contains("transform_rules.combine[0]: expected the name of an array field, found number"));
    assert!(message(custom(json!({"filter": {"b": ">1"}})))
        .contains("transform_rules.filter.b: expected a filter on an array field"));
    assert!(message(custom(json!({"filter": {"a": ">x"}})))
        .contains("transform_rules.filter.a: element 0 of `a`: cannot compare number 1 with string \"x\" using `>`"));
    assert!(message(custom(json!({"filter": {"a": ">="}})))
        .contains("transform_rules.filter.a: predicate `>=` has an operator but no value"));
    assert!(message(custom(json!({"field_mappings": {"x": "nope.y"}})))
        .contains("transform_rules.field_mappings.x: no field `nope`"));
    assert!(
        message(custom(json!({"combine": ["a"], "conditions": {"q": 1}})))
            .contains("transform_rules.conditions.q: unknown variable `q`")
    );
    assert!(message(custom(
        json!({"combine": ["a"], "conditions": [{"a": 1}, {"a": "<x"}]})
    ))
    .contains("transform_rules.conditions[1].a: cannot compare"));
    assert!(
        message(json!({"expansion_config": {"type": "custom", "transform_rules": {}}}))
            .contains("reads its fields from the input's `data` object, which is missing")
    );
    assert!(message(json!({"expansion_config": {"type": "custom"}}))
        .ends_with("missing field `transform_rules`"));
}

#[test]
fn config_in_two_places_is_ambiguous() {
    let input =
        json!({"xs": [1], "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}}});
    let config = json!({"type": "array", "array_mapping": {"x": "xs"}});
    let error = plan_task(&input, &config).unwrap_err();
    assert_eq!(
        error.to_string(),
        "task `t` at groups[1].tasks[0].expansion_config: expansion_config is given both on the task and in its input; keep one"
    );
}

#[test]
fn an_expansion_needs_an_object_input() {
    let input = json!(["not", "an", "object"]);
    let config = json!({"type": "array", "array_mapping": {"x": "xs"}});
    let error = plan_task(&input, &config).unwrap_err();
    assert_eq!(
        error.to_string(),
        "task `t` at groups[1].tasks[0].input: expected an object, found array"
    );
}
