//! The pool against real worker processes: this test binary re-executed as the
//! worker (`worker::tests::worker_process`), or programs that misbehave.
#![expect(clippy::unwrap_used, reason = "tests")]

use super::*;
use crate::proto::ssh::command::worker::tests::UNGUARDED;

fn commands(list: &[&str]) -> Split {
    Split::Commands(list.iter().map(|c| (*c).to_owned()).collect())
}

fn quick() -> Limits {
    Limits {
        deadline: Duration::from_secs(2),
        wait: Duration::from_secs(2),
        ..Limits::default()
    }
}

#[test]
fn splits_in_a_worker_and_reuses_it() {
    let pool = Splitter::new(WorkerCommand::this_binary(), quick());
    assert_eq!(pool.split("ls; rm -rf /x"), commands(&["ls", "rm -rf /x"]));
    assert_eq!(pool.split("echo 'x"), Split::Unparsed);
    assert_eq!(
        pool.split("sudo reboot"),
        commands(&["sudo reboot", "reboot"])
    );
    let state = pool.lock();
    assert_eq!(
        (state.alive, state.idle.len()),
        (1, 1),
        "one worker served all three"
    );
}

/// Issue 18: lines found by fuzzing that make brush-parser spin (66 nested `(`),
/// grow past 2 GiB (`echo $(cat <<  x `, `h;<<` and a form feed) or panic, handed to
/// the raw parser with the guards off. Each is unparsed, and the pool goes on
/// serving.
#[test]
fn lines_that_blow_up_the_raw_parser_are_unparsed_and_the_pool_recovers() {
    let worker = WorkerCommand::this_binary().env(UNGUARDED, "1");
    let pool = Splitter::new(worker, quick());
    assert_eq!(pool.split("true"), commands(&["true"]));
    for line in [
        format!("l3;{}+ta", "(".repeat(66)),
        "echo $(cat <<  x ".to_owned(),
        "h;<<\u{c})".to_owned(),
        "rm -rf 88888888888888888>x".to_owned(),
    ] {
        assert_eq!(pool.split(&line), Split::Unparsed, "{line:?}");
        assert_eq!(
            pool.split("ls /tmp"),
            commands(&["ls /tmp"]),
            "after {line:?}"
        );
    }
    assert!(pool.lock().alive <= pool.limits.workers);
}

/// Issue 18: a line that passes every cheap guard and still grows brush-parser's
/// memory past 2 GiB (found by fuzzing in process; the root `ssh_parse` suite sends
/// it through the daemon). The daemon's own pool, guards on: unparsed, and the pool
/// goes on serving.
#[test]
fn a_line_past_the_guards_that_blows_up_the_parser_is_contained() {
    let line = "ls;rm#\u{10}\u{10}\u{1c}<<<<<\u{c}\u{c}\u{c}\u{c}\u{c}\u{c}\u{c}\u{c}\u{c}\
        <<<<4\u{c}\u{c}\u{c}\u{c}<<<<<\u{c}?sm;#r\u{10}\u{10}\u{1c}<<<<<\u{c}A=(x\u{c}\u{c})";
    assert!(!crate::proto::ssh::command::guards::refuses(line));
    let pool = Splitter::new(WorkerCommand::this_binary(), quick());
    assert_eq!(pool.split(line), Split::Unparsed);
    assert_eq!(pool.split("ls /tmp"), commands(&["ls /tmp"]));
}

/// With every worker busy and no room in the queue, a line is unparsed at once.
#[test]
fn a_full_pool_answers_unparsed_rather_than_queueing() {
    let limits = Limits {
        workers: 1,
        queue: 0,
        ..quick()
    };
    let pool = Splitter::new(WorkerCommand::this_binary(), limits);
    let busy = pool.take().unwrap();
    assert_eq!(pool.split("ls"), Split::Unparsed);
    pool.give_back(Some(busy));
    assert_eq!(pool.split("ls"), commands(&["ls"]));
}

/// A worker that cannot start, ends at once, or writes anything but replies.
#[test]
fn broken_workers_make_lines_unparsed() {
    for program in ["/nonexistent/portcullis", "/bin/true", "/usr/bin/yes"] {
        let limits = Limits {
            deadline: Duration::from_millis(300),
            ..quick()
        };
        let pool = Splitter::new(WorkerCommand::new(program), limits);
        assert_eq!(pool.split("ls"), Split::Unparsed, "{program}");
        assert_eq!(pool.lock().alive, 0, "{program}: the worker was let go");
    }
}

#[test]
fn too_long_lines_never_reach_a_worker() {
    let pool = Splitter::new(WorkerCommand::new("/nonexistent"), quick());
    assert_eq!(pool.split(&"x".repeat(MAX_LINE + 1)), Split::Unparsed);
    assert_eq!(pool.lock().alive, 0);
}
