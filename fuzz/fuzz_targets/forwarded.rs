//! The `forwarded` header of an inbound tunnel: any text yields an address or nothing, and an
//! address found is one the text spells in a `for=` pair.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypoint::ingress::forwarded_for;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Some(addr) = forwarded_for(text) {
        let lower = text.to_ascii_lowercase();
        assert!(lower.contains("for="), "{addr} found without a for= pair");
    }
});
