//! The daemon's configuration: `serialine::config::Config::load_str` over
//! arbitrary TOML text (figment extraction, path resolution, validation of
//! lines, devices, profiles and templates). Must return Ok or Err, never
//! panic. No environment overrides and no file reads (`load_str`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serialine::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::load_str(text, "fuzz.toml") {
        Ok(cfg) => {
            // What check-config and startup do with a loaded config.
            let _ = cfg.summary();
            let _ = cfg.mqtt_client_id();
            let _ = cfg.ledger_path();
            assert_eq!(cfg.origin_name(), "fuzz.toml");
            assert!(cfg.env_overrides().is_empty());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
