//! A response body through the `mask_json` rewriter in pieces of any size: never a
//! panic, the same output wherever the pieces are cut, and in JSON every selected
//! value masked and nothing else changed (see `portcullis::proto::http::fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portcullis::proto::http::fuzz::json_mask(data);
});
