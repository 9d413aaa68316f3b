//! The CONNECT head Pingora sends the waypoint's egress: whatever the bytes, the parser answers
//! complete / incomplete / error; a complete head is self-delimiting and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waypoint::upstream::egress::parse_connect;

fuzz_target!(|bytes: &[u8]| {
    let Ok(Some((target, len))) = parse_connect(bytes) else {
        return;
    };
    assert!(len <= bytes.len(), "head length past the input");
    assert_eq!(
        parse_connect(&bytes[..len]),
        Ok(Some((target.clone(), len))),
        "the head alone parses the same"
    );
    let mut again = format!("CONNECT {} HTTP/1.1\r\n", target.authority).into_bytes();
    for (name, value) in target.proxy_headers() {
        again.extend_from_slice(name.as_bytes());
        again.extend_from_slice(b": ");
        again.extend_from_slice(&value);
        again.extend_from_slice(b"\r\n");
    }
    again.extend_from_slice(b"\r\n");
    let (reparsed, _) = parse_connect(&again)
        .expect("a parsed target serializes to a valid head")
        .expect("complete");
    assert_eq!(reparsed, target, "round trip");
});
