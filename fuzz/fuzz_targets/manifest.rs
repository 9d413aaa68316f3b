//! Manifests as users write them: any text, in one or two files, compiles to a snapshot or to
//! errors, never a panic; and compiling is deterministic.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use mesh_config::compile;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let docs = match text.split_once("\n---8<---\n") {
        Some((a, b)) => vec![
            (PathBuf::from("a.yaml"), a.to_owned()),
            (PathBuf::from("b.yaml"), b.to_owned()),
        ],
        None => vec![(PathBuf::from("mesh.yaml"), text.to_owned())],
    };
    let first = compile(docs.clone()).map(|_| ()).map_err(|e| e.to_string());
    let second = compile(docs).map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(first, second, "two compiles of the same text disagree");
});
