//! The load generator's HTTP/1.1 response framing: any head parses or fails cleanly within its
//! input, and a chunked body decodes the same whether it arrives at once or cut in two.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loadtest::load::framing::{ChunkedBody, FramingError, parse_head};

/// Feeds `input` in pieces ending at `cuts`, re-feeding what the decoder left unused.
/// Returns the data count and whether the body ended, or the first error.
fn decode(input: &[u8], cuts: &[usize]) -> Result<(u64, bool), FramingError> {
    let mut body = ChunkedBody::default();
    let (mut pending, mut data, mut at) = (Vec::new(), 0u64, 0usize);
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        pending.extend_from_slice(&input[at..end.max(at)]);
        at = end.max(at);
        let progress = body.feed(&pending)?;
        data += progress.data;
        pending.drain(..progress.consumed);
        if body.is_done() {
            break;
        }
    }
    Ok((data, body.is_done()))
}

fuzz_target!(|bytes: &[u8]| {
    if let Ok(Some(head)) = parse_head(bytes) {
        assert!(head.len <= bytes.len(), "head length past the input");
    }
    let Some((&cut, input)) = bytes.split_first() else {
        return;
    };
    let cut = usize::from(cut) % (input.len() + 1);
    let whole = decode(input, &[]);
    let split = decode(input, &[cut]);
    assert_eq!(whole, split, "the same bytes cut at {cut}");
});
