//! Request paths: the waypoint's normalization (`/a/../b`, `%61`) gives a path that is
//! normal already, starts with `/` and has no dot segment left; policy path templates
//! (`{*}`, `{**}`) parse or are refused, and match any path, without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_config::StringMatch;
use waypoint::request::normalize::normalize_path;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let (template, path) = text.split_once('\n').unwrap_or((text, text));
    if let Some(normal) = normalize_path(path) {
        assert!(normal.starts_with('/'), "{path:?} → {normal:?}");
        assert_eq!(normalize_path(&normal), None, "{path:?} → {normal:?} is not normal");
        let dots = normal.split('/').any(|segment| segment == "." || segment == "..");
        assert!(!dots, "{path:?} → {normal:?} keeps a dot segment");
    }
    if let Ok(pattern) = StringMatch::parse_path(template) {
        let _ = pattern.matches(path);
    }
});
