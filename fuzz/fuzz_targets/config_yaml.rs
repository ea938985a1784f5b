//! Fuzz the configuration loader (`Config::from_yaml`): any text gives a config or an
//! error, never a panic. An accepted config must also describe itself, mask its secrets
//! and build its variable substitutions without panicking, and loading is deterministic.
#![no_main]

use std::path::Path;

use flamenco_core::config::Config;
use flamenco_core::variables::Substitutions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.yaml");
    match Config::from_yaml(text, path) {
        Ok(config) => {
            let _ = config.describe_effective();
            let masked = config.masked();
            assert_eq!(masked.is_upstream(), config.is_upstream());
            let subs = Substitutions::new(&config);
            let mut value = serde_json::json!(["{blender}", {"a": "{render}/x"}]);
            subs.apply_to_value("linux", &mut value);
            let again = Config::from_yaml(text, path).expect("the same text loads again");
            assert_eq!(again, config);
        }
        Err(e) => {
            // Errors name the file.
            assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
        }
    }
});
