//! The SSH command-line splitter (`proto::ssh::command::split`), which every exec's
//! rules are matched against. Properties: it never panics; it answers the same twice;
//! and its answer is bounded: at most 256 simple commands, none longer than twice the line
//! (each is words of the line with quotes removed, joined by spaces). A panic inside the parser is
//! not a failure when `split` catches it (the line is then `Unparsed`).
#![no_main]

use portcullis::proto::ssh::command::{Split, split};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // brush-parser panics on some hostile lines; `split` catches those and answers
    // `Unparsed`, which is what the daemon needs. libfuzzer-sys's hook aborts on any
    // panic, caught or not, so it is swapped for the default one (which only prints):
    // a panic that escapes `split` still reaches libfuzzer-sys's own catch and aborts.
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let first = split(line);
    assert_eq!(first, split(line), "split is not deterministic for {line:?}");
    if let Split::Commands(commands) = first {
        assert!(commands.len() <= 256, "{} commands", commands.len());
        for c in &commands {
            assert!(
                c.len() <= 2 * line.len(),
                "a command longer than its line: {c:?} from {line:?}"
            );
        }
    }
});
