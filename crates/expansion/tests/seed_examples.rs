//! The expansion examples of seed 002, verbatim: exact instances, in order.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;

#[test]
fn array_of_simple_values() {
    let instances = expand(json!({
        "input_array": ["item1", "item2", "item3"],
        "expansion_config": {
            "type": "array",
            "array_mapping": {"input": "input_array"},
            "output_format": "separate"
        }
    }));
    assert_eq!(
        instances,
        vec![
            json!({"input": "item1"}),
            json!({"input": "item2"}),
            json!({"input": "item3"})
        ]
    );
}

#[test]
fn array_of_objects() {
    let instances = expand(json!({
        "users": [
            {"id": 1, "name": "Alice", "role": "admin"},
            {"id": 2, "name": "Bob", "role": "user"},
            {"id": 3, "name": "Carol", "role": "user"}
        ],
        "expansion_config": {
            "type": "array",
            "array_mapping": {"user": "users"},
            "output_format": "separate"
        }
    }));
    assert_eq!(
        instances,
        vec![
            json!({"user": {"id": 1, "name": "Alice", "role": "admin"}}),
            json!({"user": {"id": 2, "name": "Bob", "role": "user"}}),
            json!({"user": {"id": 3, "name": "Carol", "role": "user"}}),
        ]
    );
}

#[test]
fn matrix_is_row_major_in_mapping_key_order() {
    let input = json!({
        "rows": ["A", "B"],
        "cols": [1, 2, 3],
        "expansion_config": {
            "type": "matrix",
            "array_mapping": {
                "row": "rows",
                "col": "cols"
            }
        }
    });
    let labels: Vec<String> = expand(input)
        .iter()
        .map(|i| format!("{}{}", i["row"].as_str().unwrap(), i["col"]))
        .collect();
    assert_eq!(labels, ["A1", "A2", "A3", "B1", "B2", "B3"]);

    // Key order decides the order, not alphabetical order: col first makes col the outer loop.
    let swapped = expand(json!({
        "rows": ["A", "B"],
        "cols": [1, 2, 3],
        "expansion_config": {"type": "matrix", "array_mapping": {"col": "cols", "row": "rows"}}
    }));
    let labels: Vec<String> = swapped
        .iter()
        .map(|i| format!("{}{}", i["row"].as_str().unwrap(), i["col"]))
        .collect();
    assert_eq!(labels, ["A1", "B1", "A2", "B2", "A3", "B3"]);
    // Instance objects keep the mapping's key order too.
    let keys: Vec<&String> = swapped[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["col", "row"]);
}

#[test]
fn custom_combines_filters_and_passes_the_rest_whole() {
    let instances = expand(json!({
        "data": {
            "regions": ["US", "EU"],
            "years": [2022, 2023],
            "metrics": ["sales", "growth"]
        },
        "expansion_config": {
            "type": "custom",
            "transform_rules": {
                "combine": ["regions", "metrics"],
                "filter": {"years": ">2021"}
            }
        }
    }));
    assert_eq!(
        instances,
        vec![
            json!({"regions": "US", "years": [2022, 2023], "metrics": "sales"}),
            json!({"regions": "US", "years": [2022, 2023], "metrics": "growth"}),
            json!({"regions": "EU", "years": [2022, 2023], "metrics": "sales"}),
            json!({"regions": "EU", "years": [2022, 2023], "metrics": "growth"}),
        ]
    );
}
