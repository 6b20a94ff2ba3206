//! The SSH command-line splitter (`proto::ssh::command::split`), which every exec's
//! rules are matched against. Properties: it never panics; it answers the same twice;
//! and its answer is bounded: at most 256 simple commands, none longer than the line
//! (each is words of the line with quotes removed).
#![no_main]

use portcullis::proto::ssh::command::{Split, split};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let first = split(line);
    assert_eq!(first, split(line), "split is not deterministic for {line:?}");
    if let Split::Commands(commands) = first {
        assert!(commands.len() <= 256, "{} commands", commands.len());
        for c in &commands {
            assert!(
                c.len() <= line.len(),
                "a command longer than its line: {c:?} from {line:?}"
            );
        }
    }
});
