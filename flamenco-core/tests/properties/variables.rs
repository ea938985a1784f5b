//! Variable substitution: agrees with a plain sequential-replace model (plain variables
//! first, then path replacements, each in name order), uses only the worker's platform,
//! terminates when values contain placeholders themselves, and is idempotent once no
//! placeholder is left.

use std::collections::BTreeMap;

use flamenco_core::config::{Config, VariableMap};
use flamenco_core::variables::Substitutions;
use proptest::prelude::*;
use serde_json::{json, Value};

const PLATFORMS: [&str; 3] = ["linux", "windows", "darwin"];

/// Names and values from a small alphabet, so that placeholders (also inside values,
/// also nested like `{{a}}`) are frequent.
fn variable_map() -> impl Strategy<Value = VariableMap> {
    prop::collection::btree_map(
        "[abc]{1,2}",
        prop::collection::btree_map(
            prop::sample::select(PLATFORMS.to_vec()).prop_map(str::to_string),
            "[abc{}/]{0,8}",
            0..3,
        ),
        0..4,
    )
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[abc{}/ ]{0,24}", any::<String>()]
}

fn model(config: &Config, platform: &str, input: &str) -> String {
    let mut s = input.to_string();
    for map in [&config.variables, &config.path_replacement] {
        for (name, values) in map {
            if let Some(v) = values.get(platform) {
                s = s.replace(&format!("{{{name}}}"), v);
            }
        }
    }
    s
}

fn config(variables: VariableMap, path_replacement: VariableMap) -> Config {
    Config {
        variables,
        path_replacement,
        ..Config::default()
    }
}

fn apply(subs: &Substitutions, platform: &str, s: &str) -> String {
    let mut v = Value::from(s);
    subs.apply_to_value(platform, &mut v);
    v.as_str().expect("still a string").to_string()
}

proptest! {
    #[test]
    fn agrees_with_the_sequential_model(
        vars in variable_map(),
        paths in variable_map(),
        platform in prop::sample::select(vec!["linux", "windows", "darwin", "amiga"]),
        input in text(),
    ) {
        let config = config(vars, paths);
        let subs = Substitutions::new(&config);
        let got = apply(&subs, platform, &input);
        prop_assert_eq!(&got, &model(&config, platform, &input));
        // Bounded: every placeholder is replaced once per pattern, never recursively.
        let longest = config.variables.values().chain(config.path_replacement.values())
            .flat_map(|m| m.values()).map(String::len).max().unwrap_or(0);
        let patterns = config.variables.len() + config.path_replacement.len();
        prop_assert!(got.len() <= (input.len() + 1) * (longest + 1).pow(patterns as u32));
    }

    #[test]
    fn idempotent_once_no_placeholder_is_left(
        vars in variable_map(),
        paths in variable_map(),
        platform in prop::sample::select(PLATFORMS.to_vec()),
        input in text(),
    ) {
        let subs = Substitutions::new(&config(vars, paths));
        let once = apply(&subs, platform, &input);
        if !once.contains('{') {
            prop_assert_eq!(apply(&subs, platform, &once), once);
        }
    }

    #[test]
    fn only_the_workers_platform_is_used(
        name in "[a-z]{1,6}",
        values in prop::collection::vec("[a-z/:]{0,6}", 3),
        platform in 0usize..3,
        nested in any::<bool>(),
    ) {
        let mut by_platform = BTreeMap::new();
        for (p, v) in PLATFORMS.iter().zip(&values) {
            by_platform.insert(p.to_string(), format!("<{p}>{v}"));
        }
        let mut vars = VariableMap::new();
        vars.insert(name.clone(), by_platform);
        let subs = Substitutions::new(&config(vars, VariableMap::new()));
        let placeholder = format!("{{{name}}}/x");
        let mut value = if nested {
            json!({"a": [placeholder.clone(), {"b": placeholder.clone()}], "n": 3})
        } else {
            json!(placeholder.clone())
        };
        let original = value.clone();
        subs.apply_to_value(PLATFORMS[platform], &mut value);
        let expected = format!("<{}>{}/x", PLATFORMS[platform], values[platform]);
        let expected_value = if nested {
            json!({"a": [expected.clone(), {"b": expected.clone()}], "n": 3})
        } else {
            json!(expected)
        };
        prop_assert_eq!(value, expected_value);
        // An unknown platform replaces nothing.
        let mut untouched = original.clone();
        subs.apply_to_value("amiga", &mut untouched);
        prop_assert_eq!(untouched, original);
    }
}

#[test]
fn self_referencing_values_terminate() {
    let mut vars = VariableMap::new();
    for (name, value) in [("a", "{a}{a}"), ("b", "{a}{b}")] {
        vars.insert(
            name.to_string(),
            BTreeMap::from([("linux".to_string(), value.to_string())]),
        );
    }
    let subs = Substitutions::new(&config(vars, VariableMap::new()));
    // `{a}` is replaced once (not recursively); `{b}`'s value brings a new `{a}`, which
    // stays because `a` was already applied.
    assert_eq!(apply(&subs, "linux", "{a}"), "{a}{a}");
    assert_eq!(apply(&subs, "linux", "{b}"), "{a}{b}");
}
