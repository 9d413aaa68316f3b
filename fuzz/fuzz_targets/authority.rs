//! Authorities (`host:port`, `[v6]:port`) as callers send them in CONNECT and Host: a split
//! authority has a non-empty host and, written back, splits the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_config::split_authority;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Some((host, port)) = split_authority(text) else {
        return;
    };
    assert!(!host.is_empty());
    let again = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    assert_eq!(split_authority(&again), Some((host, port)), "{text:?}");
});
