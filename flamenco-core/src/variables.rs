//! Per-platform variables and path replacement in task commands (manager-v2.md §6.5).
//!
//! The configuration's `variables` and `path_replacement` maps (name → platform → value)
//! are transposed once, when [`Substitutions`] is built, into platform → ordered list of
//! (`{name}` pattern, value). Handing out a task then only walks its command settings.
//!
//! Rules, as v2 with one deliberate change:
//! * every string value in every command's settings is rewritten, **including strings
//!   nested in lists and maps at any depth** (v2 touched top-level strings only, §11.22);
//! * first every plain variable, then every path replacement, each in name order (v2's
//!   order was unspecified); every occurrence of `{name}` is replaced;
//! * settings keys, numbers, booleans and nulls are untouched, as are the other task fields;
//! * a placeholder with no value for the platform stays as written, and an unknown platform
//!   replaces nothing.
//!
//! Path replacement values already lost their trailing `/` when the config was loaded.

use std::collections::HashMap;

use serde_json::Value;

use crate::config::Config;
use crate::model::Command;

/// The substitutions of one configuration, ready to apply per platform.
#[derive(Clone, Debug, Default)]
pub struct Substitutions {
    /// platform → (`{name}`, value), plain variables first, then path replacements, each
    /// sorted by name.
    by_platform: HashMap<String, Vec<(String, String)>>,
}

impl Substitutions {
    /// Transpose the config's `variables` and `path_replacement` maps.
    pub fn new(config: &Config) -> Substitutions {
        let mut by_platform: HashMap<String, Vec<(String, String)>> = HashMap::new();
        // BTreeMap iteration is sorted by name, so each platform's list is in name order,
        // plain variables before path replacements.
        for map in [&config.variables, &config.path_replacement] {
            for (name, platforms) in map {
                let pattern = format!("{{{name}}}");
                for (platform, value) in platforms {
                    by_platform
                        .entry(platform.clone())
                        .or_default()
                        .push((pattern.clone(), value.clone()));
                }
            }
        }
        Substitutions { by_platform }
    }

    /// True when no platform has any value (applying is then a no-op).
    pub fn is_empty(&self) -> bool {
        self.by_platform.is_empty()
    }

    /// Replace the placeholders in every string of every command's settings, for a worker
    /// of `platform` (compared case-sensitively).
    pub fn apply(&self, platform: &str, commands: &mut [Command]) {
        let Some(subs) = self.by_platform.get(platform) else {
            return;
        };
        for command in commands {
            for value in command.settings.values_mut() {
                substitute_value(subs, value);
            }
        }
    }

    /// Replace the placeholders in every string inside `value` (at any depth; object keys
    /// are untouched), for a worker of `platform`.
    pub fn apply_to_value(&self, platform: &str, value: &mut Value) {
        if let Some(subs) = self.by_platform.get(platform) {
            substitute_value(subs, value);
        }
    }
}

impl From<&Config> for Substitutions {
    fn from(config: &Config) -> Substitutions {
        Substitutions::new(config)
    }
}

fn substitute_value(subs: &[(String, String)], value: &mut Value) {
    match value {
        Value::String(s) => substitute_str(subs, s),
        Value::Array(items) => {
            for item in items {
                substitute_value(subs, item);
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                substitute_value(subs, item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn substitute_str(subs: &[(String, String)], s: &mut String) {
    // Most strings have no placeholder at all: skip them without allocating.
    if !s.contains('{') {
        return;
    }
    for (pattern, replacement) in subs {
        if s.contains(pattern.as_str()) {
            *s = s.replace(pattern.as_str(), replacement);
        }
    }
}

/// The `{name}` placeholders in `commands`' settings (strings at any depth) that the
/// configuration defines for no platform, neither in `variables` nor in
/// `path_replacement`: workers would receive them as written. A placeholder is `{`, a
/// name of letters, digits, `_` and `-` starting with a letter or `_`, and `}`; one right
/// after `$` (a shell's `${HOME}`) is not counted.
pub fn undefined_placeholders<'a>(
    config: &Config,
    commands: impl IntoIterator<Item = &'a Command>,
) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    for command in commands {
        for value in command.settings.values() {
            placeholders_in(value, &mut found);
        }
    }
    found.retain(|name| {
        !config.variables.contains_key(name) && !config.path_replacement.contains_key(name)
    });
    found
}

fn placeholders_in(value: &Value, found: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            let mut after_dollar;
            while let Some(open) = rest.find('{') {
                after_dollar = rest[..open].ends_with('$');
                rest = &rest[open + 1..];
                let Some(close) = rest.find('}') else { break };
                let name = &rest[..close];
                let mut chars = name.chars();
                let valid = chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if valid && !after_dollar {
                    found.insert(name.to_string());
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| placeholders_in(v, found)),
        Value::Object(map) => map.values().for_each(|v| placeholders_in(v, found)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn undefined_placeholders_are_found() {
        let config = Config::from_yaml(
            "variables:\n  blender:\n    linux: /usr/bin/blender\npath_replacement:\n  render:\n    linux: /render\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        let commands = vec![
            Command::new(
                "blender_render",
                json!({"blender_cmd": "{blender} --factory-startup", "out": "{render}/x/{shot}",
                       "nested": [{"a": "{ffmpeg}"}]}),
            ),
            Command::new(
                "exec",
                json!({"cmd": "bash -c 'echo ${HOME} {1..3} {a,b} {} {shot}'"}),
            ),
        ];
        let found: Vec<String> = undefined_placeholders(&config, &commands)
            .into_iter()
            .collect();
        assert_eq!(found, ["ffmpeg", "shot"]);
        assert!(undefined_placeholders(&Config::default(), &commands[..1]).contains("blender"));
    }
    use std::collections::BTreeMap;
    use std::path::Path;

    /// The unit-test config of manager-v2.md §1.6 (variables and path replacements).
    const UNITTEST_YAML: &str = r#"
database_url: mongodb://localhost/flamanager_test
listen: '[::0]:8083'
own_url: http://192.168.3.108:8083/
flamenco: http://localhost:51234/
manager_id: 5852bc5198377351f95d103e
manager_secret: SRVwA7wAxPRfudvqTDOLXwPn1cDRIlADz5Ef9kHk7d52Us
variables:
    blender:
        windows: c:/temp/blender.exe
        linux: /opt/myblenderbuild/blender
        darwin: /opt/myblenderbuild/blender
path_replacement:
    render:
        windows: r:/
        linux: /render
        darwin: /Volume/render
    render_long:
        windows: r:/long
        linux: /render/long
        darwin: /Volume/render/long
    job_storage:
        windows: s:/
        linux: /shared/
        darwin: /Volume/shared/
        autumn: hey
"#;

    const FILEPATH: &str = "{job_storage}/_flamenco/storage/sybren/2017-06-08-181223.625800-sybren-flamenco-test.flamenco/flamenco-test.flamenco.blend";
    const FILEPATH_TAIL: &str = "/_flamenco/storage/sybren/2017-06-08-181223.625800-sybren-flamenco-test.flamenco/flamenco-test.flamenco.blend";
    const RENDER_OUTPUT: &str = "{render_long}/_flamenco/output/sybren/blender-cloud-addon/flamenco-test__intermediate/render-smpl-0001-0084-frm-######";
    const RENDER_OUTPUT_TAIL: &str = "/_flamenco/output/sybren/blender-cloud-addon/flamenco-test__intermediate/render-smpl-0001-0084-frm-######";

    fn subs() -> Substitutions {
        let config = Config::from_yaml(UNITTEST_YAML, Path::new("unittest.yaml"))
            .expect("unit-test config loads");
        Substitutions::new(&config)
    }

    /// The commands of §10 tests 9–12 ("command 3" carries the paths).
    fn path_commands() -> Vec<Command> {
        vec![
            Command::new("echo", json!({"message": "Running Blender from {blender}"})),
            Command::new("sleep", json!({"time_in_seconds": 3})),
            Command::new(
                "blender_render",
                json!({
                    "filepath": FILEPATH,
                    "render_output": RENDER_OUTPUT,
                    "otherpath": "{hey}/haha",
                    "format": "EXR",
                    "frames": "47",
                    "cycles_chunk": 1.0,
                    "blender_cmd": "{blender}",
                }),
            ),
        ]
    }

    fn settings(cmds: &[Command], idx: usize, key: &str) -> Value {
        cmds[idx].settings.get(key).cloned().unwrap_or(Value::Null)
    }

    fn assert_untouched_others(cmds: &[Command]) {
        assert_eq!(settings(cmds, 2, "format"), json!("EXR"));
        assert_eq!(settings(cmds, 2, "frames"), json!("47"));
        assert_eq!(settings(cmds, 2, "cycles_chunk"), json!(1.0));
        assert_eq!(settings(cmds, 1, "time_in_seconds"), json!(3));
        assert_eq!(settings(cmds, 2, "otherpath"), json!("{hey}/haha"));
    }

    /// §10 case 8.
    #[test]
    fn replace_variables() {
        let mut cmds = vec![Command::new(
            "echo",
            json!({"message": "Running Blender from {blender} {blender}", "{blender}": 3}),
        )];
        subs().apply("linux", &mut cmds);
        assert_eq!(
            settings(&cmds, 0, "message"),
            json!("Running Blender from /opt/myblenderbuild/blender /opt/myblenderbuild/blender")
        );
        assert_eq!(settings(&cmds, 0, "{blender}"), json!(3));
    }

    /// §10 case 9.
    #[test]
    fn replace_paths_linux() {
        let mut cmds = path_commands();
        subs().apply("linux", &mut cmds);
        assert_eq!(
            settings(&cmds, 2, "filepath"),
            json!(format!("/shared{FILEPATH_TAIL}"))
        );
        assert_eq!(
            settings(&cmds, 2, "render_output"),
            json!(format!("/render/long{RENDER_OUTPUT_TAIL}"))
        );
        assert_eq!(
            settings(&cmds, 2, "blender_cmd"),
            json!("/opt/myblenderbuild/blender")
        );
        assert_untouched_others(&cmds);
    }

    /// §10 case 10.
    #[test]
    fn replace_paths_windows() {
        let mut cmds = path_commands();
        subs().apply("windows", &mut cmds);
        assert_eq!(
            settings(&cmds, 2, "filepath"),
            json!(format!("s:{FILEPATH_TAIL}"))
        );
        assert_eq!(
            settings(&cmds, 2, "render_output"),
            json!(format!("r:/long{RENDER_OUTPUT_TAIL}"))
        );
        assert_eq!(
            settings(&cmds, 2, "blender_cmd"),
            json!("c:/temp/blender.exe")
        );
        assert_eq!(
            settings(&cmds, 0, "message"),
            json!("Running Blender from c:/temp/blender.exe")
        );
        assert_untouched_others(&cmds);
    }

    /// §10 case 11.
    #[test]
    fn replace_paths_macos() {
        let mut cmds = path_commands();
        subs().apply("darwin", &mut cmds);
        assert_eq!(
            settings(&cmds, 2, "filepath"),
            json!(format!("/Volume/shared{FILEPATH_TAIL}"))
        );
        assert_eq!(
            settings(&cmds, 2, "render_output"),
            json!(format!("/Volume/render/long{RENDER_OUTPUT_TAIL}"))
        );
        assert_untouched_others(&cmds);
    }

    /// §10 case 12: only `job_storage` has an `autumn` value.
    #[test]
    fn replace_paths_unknown_os() {
        let mut cmds = path_commands();
        subs().apply("autumn", &mut cmds);
        assert_eq!(
            settings(&cmds, 2, "filepath"),
            json!(format!("hey{FILEPATH_TAIL}"))
        );
        assert_eq!(settings(&cmds, 2, "render_output"), json!(RENDER_OUTPUT));
        assert_eq!(settings(&cmds, 2, "blender_cmd"), json!("{blender}"));
        assert_untouched_others(&cmds);
    }

    #[test]
    fn platform_without_any_value_replaces_nothing() {
        let mut cmds = path_commands();
        let before = cmds.clone();
        subs().apply("plan9", &mut cmds);
        assert_eq!(cmds, before);
        // Platform names are case-sensitive.
        subs().apply("Linux", &mut cmds);
        assert_eq!(cmds, before);
    }

    #[test]
    fn nested_lists_and_maps_are_substituted() {
        let mut cmds = vec![Command::new(
            "exec",
            json!({
                "args": ["{blender}", "--render", "{job_storage}/x.blend", 7, true, null],
                "env": {
                    "PATHS": ["{render}/a", {"deep": "{render_long}/b", "{render}": "k"}],
                    "n": 1.5,
                },
            }),
        )];
        subs().apply("linux", &mut cmds);
        assert_eq!(
            cmds[0].settings.get("args").cloned(),
            Some(json!([
                "/opt/myblenderbuild/blender",
                "--render",
                "/shared/x.blend",
                7,
                true,
                null
            ]))
        );
        assert_eq!(
            cmds[0].settings.get("env").cloned(),
            Some(json!({
                "PATHS": ["/render/a", {"deep": "/render/long/b", "{render}": "k"}],
                "n": 1.5,
            }))
        );
    }

    #[test]
    fn names_are_applied_in_sorted_order_variables_before_paths() {
        let mut config = Config::default();
        let one = |v: &str| BTreeMap::from([("linux".to_string(), v.to_string())]);
        // `a` expands to a placeholder of `b`, which sorts later, so it is expanded too;
        // `c` (a path) is applied after every plain variable.
        config.variables.insert("a".into(), one("{b}"));
        config.variables.insert("b".into(), one("{c}"));
        config.path_replacement.insert("c".into(), one("/final"));
        let subs = Substitutions::new(&config);
        let mut value = json!("{a}");
        subs.apply_to_value("linux", &mut value);
        assert_eq!(value, json!("/final"));
        assert!(!subs.is_empty());
        assert!(Substitutions::default().is_empty());
    }
}
