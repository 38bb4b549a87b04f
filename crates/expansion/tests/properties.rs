//! Property tests: indexing agrees with iteration, counts agree with enumeration, and matrices
//! agree with a naive nested-loop reference.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use expansion::Limits;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// A matrix over `dims` (lengths), with excludes on the first variable and includes.
fn matrix_input(dims: &[usize], excluded: &[usize], includes: usize, zip_first_two: bool) -> Value {
    let mut input = Map::new();
    let mut mapping = Map::new();
    for (d, &len) in dims.iter().enumerate() {
        let values: Vec<Value> = (0..len).map(|i| json!(format!("v{d}_{i}"))).collect();
        input.insert(format!("arr{d}"), Value::Array(values));
        mapping.insert(format!("x{d}"), json!(format!("arr{d}")));
    }
    let exclude: Vec<Value> = excluded
        .iter()
        .map(|i| json!({"x0": format!("v0_{i}")}))
        .collect();
    let include: Vec<Value> = (0..includes)
        .map(|i| {
            let entry: Map<String, Value> = (0..dims.len())
                .map(|d| (format!("x{d}"), json!(format!("inc{i}"))))
                .collect();
            Value::Object(entry)
        })
        .collect();
    let mut config = json!({
        "type": "matrix", "array_mapping": mapping, "allow_empty": true,
        "exclude": exclude, "include": include
    });
    if zip_first_two {
        config["zip"] = json!([["x0", "x1"]]);
    }
    input.insert("label".into(), json!("{{index}}"));
    input.insert("expansion_config".into(), config);
    Value::Object(input)
}

/// Nested loops, row-major, excludes dropped, includes appended.
fn reference(dims: &[usize], excluded: &[usize], includes: usize) -> Vec<Vec<String>> {
    let mut combos: Vec<Vec<usize>> = vec![vec![]];
    for &len in dims {
        combos = combos
            .into_iter()
            .flat_map(|prefix| (0..len).map(move |i| [prefix.clone(), vec![i]].concat()))
            .collect();
    }
    let mut out: Vec<Vec<String>> = combos
        .into_iter()
        .filter(|c| !excluded.contains(&c[0]))
        .map(|c| {
            c.iter()
                .enumerate()
                .map(|(d, i)| format!("v{d}_{i}"))
                .collect()
        })
        .collect();
    for i in 0..includes {
        out.push(vec![format!("inc{i}"); dims.len()]);
    }
    out
}

fn values_of(instance: &Value, dims: usize) -> Vec<String> {
    (0..dims)
        .map(|d| instance[format!("x{d}")].as_str().unwrap().to_string())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn matrices_agree_with_nested_loops(
        dims in prop::collection::vec(1usize..5, 1..4),
        excluded in prop::collection::vec(0usize..5, 0..3),
        includes in 0usize..3,
    ) {
        let expansion = plan_with(&matrix_input(&dims, &excluded, includes, false), &json!({}), &Limits::default()).unwrap();
        let expected = reference(&dims, &excluded, includes);
        prop_assert_eq!(expansion.len(), expected.len() as u64);
        let rendered = render_all(&expansion);
        let got: Vec<Vec<String>> = rendered.iter().map(|i| values_of(i, dims.len())).collect();
        prop_assert_eq!(got, expected);
        for (i, instance) in rendered.iter().enumerate() {
            prop_assert_eq!(&instance["label"], &json!(i));
        }
    }

    #[test]
    fn get_equals_the_ith_element_of_iteration(
        dims in prop::collection::vec(0usize..6, 2..5),
        excluded in prop::collection::vec(0usize..6, 0..4),
        includes in 0usize..3,
        zip in any::<bool>(),
        start in 0u64..40,
        width in 0u64..40,
    ) {
        let mut dims = dims;
        if zip { dims[1] = dims[0]; }
        let expansion = plan_with(&matrix_input(&dims, &excluded, includes, zip), &json!({}), &Limits::default()).unwrap();
        let all: Vec<_> = expansion.iter().collect();
        prop_assert_eq!(all.len() as u64, expansion.len());
        prop_assert_eq!(expansion.iter().len() as u64, expansion.len());
        for (i, instance) in all.iter().enumerate() {
            prop_assert_eq!(expansion.get(i as u64), Some(*instance));
            prop_assert_eq!(instance.index(), i as u64);
        }
        prop_assert_eq!(expansion.get(expansion.len()), None);
        let end = start + width;
        let slice: Vec<_> = expansion.range(start..end).collect();
        let lo = (start as usize).min(all.len());
        let hi = (end as usize).min(all.len());
        prop_assert_eq!(slice, all[lo..hi].to_vec());
    }

    #[test]
    fn custom_conditions_agree_between_get_and_iteration(
        a in prop::collection::vec(0i64..10, 1..6),
        b in prop::collection::vec(0i64..10, 1..6),
        threshold in 0i64..10,
    ) {
        let input = json!({
            "data": {"a": a, "b": b},
            "expansion_config": {
                "type": "custom",
                "allow_empty": true,
                "transform_rules": {"combine": ["a", "b"], "conditions": [{"a": format!(">{threshold}")}, {"b": threshold}]}
            }
        });
        let expansion = plan_with(&input, &json!({}), &Limits::default()).unwrap();
        let expected: Vec<(i64, i64)> = a.iter()
            .flat_map(|&x| b.iter().map(move |&y| (x, y)))
            .filter(|&(x, y)| x > threshold || y == threshold)
            .collect();
        prop_assert_eq!(expansion.len(), expected.len() as u64);
        let got: Vec<(i64, i64)> = render_all(&expansion)
            .iter()
            .map(|i| (i["a"].as_i64().unwrap(), i["b"].as_i64().unwrap()))
            .collect();
        prop_assert_eq!(got, expected);
        for (i, instance) in expansion.iter().enumerate() {
            prop_assert_eq!(expansion.get(i as u64), Some(instance));
        }
    }
}
