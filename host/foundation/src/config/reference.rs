//! The configuration reference (docs/reference/config.md) checked against
//! the config types: its example parses as a config (no field the types do
//! not have), names every field the defaults have, and shows each field's
//! default unless its comment says `default:` (or its section is a
//! non-default backend's). A field added without its docs fails here.

use super::PlatformConfig;
use serde_json::Value;
use std::collections::BTreeMap;

const REFERENCE: &str = include_str!("../../../../docs/reference/config.md");

/// The page's YAML example.
fn example() -> &'static str {
    let start = REFERENCE.find("```yaml\n").expect("docs/reference/config.md has a ```yaml example") + "```yaml\n".len();
    let end = start + REFERENCE[start..].find("```").expect("the example ends");
    &REFERENCE[start..end]
}

/// Each leaf of a JSON value by its dotted path.
fn leaves(value: &Value, path: &str, found: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(fields) => {
            for (key, value) in fields {
                leaves(value, &if path.is_empty() { key.clone() } else { format!("{path}.{key}") }, found);
            }
        }
        other => {
            found.insert(path.to_string(), other.clone());
        }
    }
}

/// The comment of each key's line in the example, by dotted path (two
/// spaces of indentation a level).
fn comments(yaml: &str) -> BTreeMap<String, String> {
    let mut path: Vec<String> = Vec::new();
    let mut found = BTreeMap::new();
    for line in yaml.lines().filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#')) {
        let level = (line.len() - line.trim_start().len()) / 2;
        let Some((key, rest)) = line.trim_start().split_once(':') else { continue };
        path.truncate(level);
        path.push(key.to_string());
        let comment = rest.split_once(" # ").map(|(_, comment)| comment.trim().to_string()).unwrap_or_default();
        found.insert(path.join("."), comment);
    }
    found
}

#[test]
fn the_config_reference_names_every_field_with_its_default() {
    let yaml = example();
    let documented: PlatformConfig =
        serde_norway::from_str(yaml).unwrap_or_else(|error| panic!("the example of docs/reference/config.md is no config: {error}"));
    let mut defaults = BTreeMap::new();
    leaves(&serde_json::to_value(PlatformConfig::default()).unwrap(), "", &mut defaults);
    let mut shown = BTreeMap::new();
    leaves(&serde_json::to_value(&documented).unwrap(), "", &mut shown);
    let comments = comments(yaml);
    let mut wrong = Vec::new();
    for (path, default) in &defaults {
        let Some(comment) = comments.get(path) else {
            wrong.push(format!("{path} (default {default}) is not in the example"));
            continue;
        };
        let other_backend = path.starts_with("coredms.") || path.starts_with("messaging.");
        if !other_backend && !comment.contains("default:") && shown.get(path) != Some(default) {
            wrong.push(format!("{path} shows {:?}, but its default is {default} (or say `default: …` in its comment)", shown.get(path)));
        }
    }
    assert!(defaults.len() > 20, "the walk found the fields: {defaults:?}");
    assert!(wrong.is_empty(), "docs/reference/config.md lags the config types:\n{}", wrong.join("\n"));
}
