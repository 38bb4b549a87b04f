//! Every rule of the expansion language beyond the seed examples.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use expansion::{ExpansionType, Limits, OutputFormat};
use serde_json::json;

#[test]
fn a_whole_placeholder_keeps_the_json_type_and_text_placeholders_render_as_text() {
    let instances = expand(json!({
        "users": [{"name": "Ann", "age": 41, "tags": ["a"]}],
        "who": "{{user}}",
        "age": "{{user.age}}",
        "tags": "{{ user.tags }}",
        "greeting": "hello {{user.name}}, {{user.age}} years, tags {{user.tags}}",
        "nested": {"list": ["{{user.name}}", 1], "n": "{{index}}"},
        "expansion_config": {"type": "array", "array_mapping": {"user": "users"}}
    }));
    assert_eq!(
        instances,
        vec![json!({
            "who": {"name": "Ann", "age": 41, "tags": ["a"]},
            "age": 41,
            "tags": ["a"],
            "greeting": "hello Ann, 41 years, tags [\"a\"]",
            "nested": {"list": ["Ann", 1], "n": 0},
            "user": {"name": "Ann", "age": 41, "tags": ["a"]}
        })]
    );
}

#[test]
fn matrix_labels_and_index() {
    let instances = expand(json!({
        "rows": ["A", "B"],
        "cols": [1, 2],
        "cell": "{{row}}-{{col}}",
        "n": "#{{index}}",
        "expansion_config": {"type": "matrix", "array_mapping": {"row": "rows", "col": "cols"}}
    }));
    let cells: Vec<(&str, &str)> = instances
        .iter()
        .map(|i| (i["cell"].as_str().unwrap(), i["n"].as_str().unwrap()))
        .collect();
    assert_eq!(
        cells,
        [("A-1", "#0"), ("A-2", "#1"), ("B-1", "#2"), ("B-2", "#3")]
    );
}

#[test]
fn values_are_inserted_once_so_braces_in_data_stay_literal() {
    let instances = expand(json!({
        "items": ["{{index}}", "{{context.secret}}"],
        "text": "value: {{item}}",
        "expansion_config": {"type": "array", "array_mapping": {"item": "items"}}
    }));
    assert_eq!(instances[0]["text"], json!("value: {{index}}"));
    assert_eq!(instances[1]["item"], json!("{{context.secret}}"));
}

#[test]
fn templates_work_in_object_keys() {
    let instances = expand(json!({
        "names": ["x", "y"],
        "out": {"key_{{name}}": "{{index}}"},
        "expansion_config": {"type": "array", "array_mapping": {"name": "names"}}
    }));
    assert_eq!(instances[1]["out"], json!({"key_y": 1}));
}

#[test]
fn an_input_field_named_like_a_variable_wins_over_the_appended_variable() {
    let instances = expand(json!({
        "users": [{"name": "Ann"}],
        "user": "{{user.name}}",
        "expansion_config": {"type": "array", "array_mapping": {"user": "users"}}
    }));
    assert_eq!(instances, vec![json!({"user": "Ann"})]);
}

#[test]
fn mappings_read_nested_input_paths_and_the_context() {
    let input = json!({
        "source": {"items": [1, 2]},
        "keep": true,
        "expansion_config": {
            "type": "matrix",
            "array_mapping": {"user": "context.fetch_users", "n": "source.items"}
        }
    });
    let context = json!({"fetch_users": ["ann", "bob"]});
    let expansion = plan_with(&input, &context, &Limits::default()).unwrap();
    let instances = render_all(&expansion);
    assert_eq!(instances.len(), 4);
    // The consumed nested array is dropped, its parent stays.
    assert_eq!(
        instances[3],
        json!({"source": {}, "keep": true, "user": "bob", "n": 2})
    );
}

#[test]
fn context_placeholders_resolve_at_plan_time() {
    let input = json!({"prompt": "hi {{context.user.name}}", "all": "{{context.user}}"});
    let context = json!({"user": {"name": "Ann"}});
    let expansion = plan_with(&input, &context, &Limits::default()).unwrap();
    assert_eq!(expansion.kind(), None);
    assert_eq!(expansion.len(), 1);
    assert_eq!(
        render_all(&expansion),
        vec![json!({"prompt": "hi Ann", "all": {"name": "Ann"}})]
    );
}

#[test]
fn a_task_without_expansion_is_one_instance_of_any_json() {
    assert_eq!(expand(json!("just {{index}}")), vec![json!("just 0")]);
    assert_eq!(expand(json!(null)), vec![json!(null)]);
}

#[test]
fn three_dimensions_multiply() {
    let instances = expand(json!({
        "a": [1, 2], "b": ["x", "y", "z"], "c": [true, false],
        "expansion_config": {"type": "matrix", "array_mapping": {"a": "a", "b": "b", "c": "c"}}
    }));
    assert_eq!(instances.len(), 12);
    assert_eq!(instances[0], json!({"a": 1, "b": "x", "c": true}));
    assert_eq!(instances[1], json!({"a": 1, "b": "x", "c": false}));
    assert_eq!(instances[11], json!({"a": 2, "b": "z", "c": false}));
}

#[test]
fn zip_type_pairs_arrays() {
    let instances = expand(json!({
        "names": ["a", "b", "c"], "ids": [1, 2, 3],
        "expansion_config": {"type": "zip", "array_mapping": {"name": "names", "id": "ids"}}
    }));
    assert_eq!(
        instances,
        vec![
            json!({"name": "a", "id": 1}),
            json!({"name": "b", "id": 2}),
            json!({"name": "c", "id": 3})
        ]
    );
}

#[test]
fn zip_groups_inside_a_matrix_are_one_dimension() {
    let instances = expand(json!({
        "os": ["linux", "mac"], "arch": ["x86", "arm"], "v": [1, 2, 3],
        "expansion_config": {
            "type": "matrix",
            "array_mapping": {"v": "v", "os": "os", "arch": "arch"},
            "zip": [["os", "arch"]]
        }
    }));
    assert_eq!(instances.len(), 6);
    assert_eq!(instances[0], json!({"v": 1, "os": "linux", "arch": "x86"}));
    assert_eq!(instances[1], json!({"v": 1, "os": "mac", "arch": "arm"}));
    assert_eq!(instances[5], json!({"v": 3, "os": "mac", "arch": "arm"}));
}

#[test]
fn exclude_removes_by_partial_match_and_include_appends() {
    let expansion = plan(json!({
        "rows": ["A", "B"], "cols": [1, 2, 3],
        "expansion_config": {
            "type": "matrix",
            "array_mapping": {"row": "rows", "col": "cols"},
            "exclude": [{"row": "A", "col": 2}, {"col": 3}],
            "include": [{"row": "C", "col": 9}]
        }
    }));
    assert_eq!(expansion.len(), 4);
    let labels: Vec<String> = render_all(&expansion)
        .iter()
        .map(|i| format!("{}{}", i["row"].as_str().unwrap(), i["col"]))
        .collect();
    assert_eq!(labels, ["A1", "B1", "B2", "C9"]);
}

#[test]
fn exclude_matches_object_values_partially() {
    let instances = expand(json!({
        "targets": [{"os": "linux", "arch": "x86"}, {"os": "mac", "arch": "arm"}],
        "expansion_config": {
            "type": "array",
            "array_mapping": {"target": "targets"},
            "exclude": [{"target": {"os": "mac"}}]
        }
    }));
    assert_eq!(
        instances,
        vec![json!({"target": {"os": "linux", "arch": "x86"}})]
    );
}

#[test]
fn custom_filter_on_a_combined_field_filters_before_combining() {
    let instances = expand(json!({
        "data": {"regions": ["US", "EU", "APAC"], "years": [2021, 2022, 2023]},
        "expansion_config": {
            "type": "custom",
            "transform_rules": {
                "combine": ["regions", "years"],
                "filter": {"years": ">=2022", "regions": ["US", "APAC"]}
            }
        }
    }));
    let pairs: Vec<String> = instances
        .iter()
        .map(|i| format!("{}{}", i["regions"].as_str().unwrap(), i["years"]))
        .collect();
    assert_eq!(pairs, ["US2022", "US2023", "APAC2022", "APAC2023"]);
}

#[test]
fn custom_field_mappings_rename_and_project() {
    let instances = expand(json!({
        "data": {
            "users": [{"name": "Ann", "team": "a"}, {"name": "Bob", "team": "b"}],
            "quarters": ["Q1", "Q2"],
            "unused": 1
        },
        "expansion_config": {
            "type": "custom",
            "transform_rules": {
                "combine": ["users", "quarters"],
                "field_mappings": {"who": "users.name", "q": "quarters"}
            }
        }
    }));
    assert_eq!(instances.len(), 4);
    assert_eq!(instances[2], json!({"who": "Bob", "q": "Q1"}));
}

#[test]
fn custom_conditions_drop_combinations() {
    let input = |conditions| {
        json!({
            "data": {"regions": ["US", "EU"], "metrics": ["sales", "growth", "churn"]},
            "expansion_config": {
                "type": "custom",
                "transform_rules": {"combine": ["regions", "metrics"], "conditions": conditions}
            }
        })
    };
    let all = expand(input(
        json!({"regions": "!=EU", "metrics": ["sales", "churn"]}),
    ));
    assert_eq!(
        all,
        vec![
            json!({"regions": "US", "metrics": "sales"}),
            json!({"regions": "US", "metrics": "churn"})
        ]
    );
    // A list of condition objects keeps a combination when any of them holds.
    let any = expand(input(
        json!([{"regions": "EU", "metrics": "growth"}, {"metrics": "churn"}]),
    ));
    assert_eq!(any.len(), 3);
    assert_eq!(any[1], json!({"regions": "EU", "metrics": "growth"}));
}

#[test]
fn custom_zip_and_source_from_the_context() {
    let input = json!({
        "expansion_config": {
            "type": "custom",
            "zip": [["cities", "codes"]],
            "transform_rules": {"source": "context.geo", "combine": ["cities", "codes"]}
        }
    });
    let context = json!({"geo": {"cities": ["Oslo", "Rome"], "codes": ["NO", "IT"], "note": "n"}});
    let expansion = plan_with(&input, &context, &Limits::default()).unwrap();
    assert_eq!(
        render_all(&expansion),
        vec![
            json!({"cities": "Oslo", "codes": "NO", "note": "n"}),
            json!({"cities": "Rome", "codes": "IT", "note": "n"}),
        ]
    );
}

#[test]
fn task_level_expansion_config_is_accepted() {
    let input = json!({"xs": [1, 2]});
    let config = json!({"type": "array", "array_mapping": {"x": "xs"}, "output_format": "merge"});
    let expansion = plan_task(&input, &config).unwrap();
    assert_eq!(expansion.kind(), Some(ExpansionType::Array));
    assert_eq!(expansion.output_format(), OutputFormat::Merge);
    assert_eq!(
        render_all(&expansion),
        vec![json!({"x": 1}), json!({"x": 2})]
    );
}

#[test]
fn allow_empty_gives_zero_instances() {
    let expansion = plan(json!({
        "xs": [],
        "expansion_config": {"type": "array", "array_mapping": {"x": "xs"}, "allow_empty": true}
    }));
    assert_eq!(expansion.len(), 0);
    assert_eq!(expansion.iter().count(), 0);
}

#[test]
fn get_and_ranges_address_instances_by_index() {
    let expansion = plan(json!({
        "a": [0, 1, 2, 3], "b": [0, 1, 2],
        "expansion_config": {
            "type": "matrix",
            "array_mapping": {"a": "a", "b": "b"},
            "exclude": [{"b": 1}],
            "include": [{"a": 9, "b": 9}]
        }
    }));
    assert_eq!(expansion.len(), 9);
    let all: Vec<_> = expansion.iter().collect();
    let slice: Vec<_> = expansion.range(3..7).collect();
    assert_eq!(slice, all[3..7]);
    assert_eq!(
        expansion.get(8).map(|i| expansion.render(&i).unwrap()),
        Some(json!({"a": 9, "b": 9}))
    );
    assert_eq!(expansion.get(9), None);
    assert_eq!(expansion.range(5..100).len(), 4);
}

#[test]
fn a_million_instance_matrix_is_counted_without_building_instances() {
    let values: Vec<u32> = (0..1000).collect();
    let expansion = plan(json!({
        "rows": values, "cols": values,
        "expansion_config": {"type": "matrix", "array_mapping": {"row": "rows", "col": "cols"}}
    }));
    assert_eq!(expansion.len(), 1_000_000);
    let last = expansion.get(999_999).unwrap();
    assert_eq!(
        expansion.render(&last).unwrap(),
        json!({"row": 999, "col": 999})
    );
}

#[test]
fn an_expansion_knows_which_context_keys_it_read_and_plans_the_same_from_them_alone() {
    let big: Vec<u64> = (0..10_000).collect();
    let context = json!({
        "users": {"list": ["ann", "bob"]},
        "greeting": "hi",
        "custom": {"size": [1, 2]},
        "unread": big,
    });
    let input = json!({
        "expansion_config": {"type": "array", "array_mapping": {"u": "context.users.list"}},
        "p": "{{context.greeting}} {{u}}",
    });
    let full = plan_with(&input, &context, &Limits::default()).unwrap();
    assert_eq!(full.context_keys(), ["users", "greeting"]);

    let serde_json::Value::Object(map) = &context else {
        unreachable!()
    };
    let subset = full.context_subset(map);
    assert_eq!(subset.keys().collect::<Vec<_>>(), ["users", "greeting"]);
    let again = plan_with(
        &input,
        &serde_json::Value::Object(subset),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(render_all(&again), render_all(&full));
    assert_eq!(render_all(&full)[1]["p"], "hi bob");

    let custom = json!({
        "expansion_config": {"type": "custom", "transform_rules": {"source": "context.custom", "combine": ["size"]}},
    });
    let planned = plan_with(&custom, &context, &Limits::default()).unwrap();
    assert_eq!(planned.context_keys(), ["custom"]);
    assert!(plan(json!({"p": "{{index}}"})).context_keys().is_empty());
}
