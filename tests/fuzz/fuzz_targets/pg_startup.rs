//! PostgreSQL startup bytes through the proxy's decoders: must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portcullis::proto::postgres::fuzz::startup(data);
});
