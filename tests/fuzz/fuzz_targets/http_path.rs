//! A request path normalized as the HTTP proxy does and matched as the policy does:
//! never a panic, always a clean absolute path, `/admin/**` exactly the paths under
//! `/admin` (see `portcullis::proto::http::fuzz::path`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portcullis::proto::http::fuzz::path(data);
});
