//! Property tests of the HTTP/1.1 response framing parsers (fuzz-style, bounded for CI):
//! arbitrary bytes never panic, and any chunked encoding decodes to its data at every split.

use loadtest::load::framing::{ChunkedBody, parse_head};
use proptest::prelude::*;

/// A chunked encoding of `chunks`, with optional trailer fields.
fn encode(chunks: &[Vec<u8>], trailers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Feeds `input` in pieces cut at `cuts`, re-feeding what the decoder left unused.
fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> (u64, bool) {
    let mut body = ChunkedBody::default();
    let (mut pending, mut data, mut at) = (Vec::new(), 0u64, 0usize);
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    ends.push(input.len());
    ends.sort_unstable();
    for end in ends {
        if end < at {
            continue;
        }
        pending.extend_from_slice(&input[at..end]);
        at = end;
        let progress = body.feed(&pending).expect("valid encoding");
        data += progress.data;
        pending.drain(..progress.consumed);
    }
    (data, body.is_done())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_heads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_head(&bytes);
    }

    #[test]
    fn arbitrary_chunked_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut body = ChunkedBody::default();
        if let Ok(progress) = body.feed(&bytes) {
            prop_assert!(progress.consumed <= bytes.len());
            prop_assert!(progress.data <= progress.consumed as u64);
        }
    }

    #[test]
    fn chunked_bodies_decode_at_every_split(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..6),
        trailers in proptest::collection::vec(("x-[a-z]{1,6}", "[a-z0-9]{0,8}"), 0..3),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let input = encode(&chunks, &trailers);
        let expected: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        prop_assert_eq!(decode_in_pieces(&input, &cuts), (expected, true));
    }
}
