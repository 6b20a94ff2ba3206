//! Issue 18 (SSH), items 4 and 6: command lines typed in an interactive shell are
//! decided at Enter, and masking reaches values broken up by escape sequences. The
//! real OpenSSH client runs `ssh -tt` under a real pseudo-terminal (Python's `pty`
//! module, driven line by line from the test) against a real Debian `sshd` through
//! the daemon; the real CLI approves. Pasted blocks (bracketed paste) are decided
//! line by line at the Enter after them.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::sshproxy::{Setup, scratch, setup, text};
use serde_json::Value;
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, ChildStdout, Stdio},
};

/// `rm` denied, `touch` reviewed by `seniors` (root runs the CLI), one secret word
/// masked.
const RULES: &str = r#"
[[group]]
name = "seniors"
users = ["root"]

[[rule]]
name = "connect"
targets = ["box"]
action = "allow"
mask_words = ["hunter2secret"]

[[rule]]
name = "no-rm"
targets = ["box"]
commands = ["rm *"]
action = "deny"
description = "files are never removed through the gateway"

[[rule]]
name = "touch-needs-a-senior"
targets = ["box"]
ssh = ["shell"]
commands = ["touch *"]
action = "review"
approvers = ["seniors"]
timeout = "120s"
"#;

/// Runs a program under a new pseudo-terminal (80x24) and obeys the test on stdin:
/// `send HEX` types bytes, `expect HEX` waits (up to 60 s) for bytes in the output
/// after the last match and answers `ok|timeout HEX-OF-ALL-OUTPUT`, `wait` waits for
/// the program to end and answers the same way.
const DRIVER: &str = r#"
import binascii, fcntl, os, pty, select, struct, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    os.execv(sys.argv[1], sys.argv[1:])
seen, mark, alive = b"", 0, True
def pump(t):
    global seen, alive
    if not alive:
        time.sleep(t)
        return
    r, _, _ = select.select([fd], [], [], t)
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if data:
            seen += data
        else:
            alive = False
def answer(ok):
    sys.stdout.write(("ok " if ok else "timeout ") + binascii.hexlify(seen).decode() + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "send":
        os.write(fd, binascii.unhexlify(arg))
        answer(True)
    elif cmd == "expect":
        want, deadline = binascii.unhexlify(arg), time.time() + 60
        while seen.find(want, mark) < 0 and time.time() < deadline and alive:
            pump(0.05)
        at = seen.find(want, mark)
        if at >= 0:
            mark = at + len(want)
        answer(at >= 0)
    elif cmd == "wait":
        deadline = time.time() + 60
        while alive and time.time() < deadline:
            pump(0.05)
        answer(not alive)
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// `ssh -tt HOST` under a pseudo-terminal, as `nobody` through the redirect.
struct Terminal {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Terminal {
    fn open(s: &Setup) -> Self {
        let host = s.sshd.addr.ip().to_string();
        let mut child = s
            .client(&[
                "/usr/bin/python3",
                "-c",
                DRIVER,
                "/usr/bin/ssh",
                "-tt",
                "-o",
                "BatchMode=yes",
                &host,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
        let stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
        let stdout = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one order to the driver: whether it succeeded, and all output so far.
    fn order(&mut self, order: &str, bytes: &[u8]) -> (bool, String) {
        writeln!(self.stdin, "{order} {}", hex(bytes)).unwrap_or_else(|e| panic!("{e}"));
        self.stdin.flush().unwrap_or_else(|e| panic!("{e}"));
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, seen) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        (
            status == "ok",
            String::from_utf8_lossy(&unhex(seen)).into_owned(),
        )
    }

    fn send(&mut self, bytes: &[u8]) {
        self.order("send", bytes);
    }

    /// Waits for `want` in the output after the last expected text.
    fn expect(&mut self, want: &str, s: &Setup) -> String {
        let (ok, seen) = self.order("expect", want.as_bytes());
        assert!(
            ok,
            "the terminal never showed {want:?}; it showed:\n{seen:?}\n{}",
            s.d.log()
        );
        seen
    }

    /// Types `line`, waits for its echo, then presses Enter.
    fn type_line(&mut self, line: &str, s: &Setup) {
        self.send(line.as_bytes());
        self.expect(line, s);
        self.send(b"\r");
    }

    /// Runs `echo MARKER` and waits for its output and the next prompt: the shell has
    /// read everything typed before.
    fn sync(&mut self, marker: &str, s: &Setup) {
        self.type_line(&format!("echo {marker}"), s);
        // The echo of the line was matched already: this is its output.
        self.expect(&format!("{marker}\r\n"), s);
        self.expect("# ", s);
    }

    /// Leaves the shell; everything the terminal showed.
    fn exit(mut self, s: &Setup) -> String {
        self.send(b"exit\r");
        let (ended, seen) = self.order("wait", b"");
        assert!(ended, "ssh did not end: {seen:?}\n{}", s.d.log());
        drop(self.stdin);
        let _ = self.child.wait();
        seen
    }
}

fn scratch_file(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    dir.path().join(name)
}

/// The output the shell session's asciicast recording holds, concatenated.
fn cast_output(events: &[Value]) -> String {
    let shell = events
        .iter()
        .find(|e| e["kind"] == "shell")
        .unwrap_or_else(|| panic!("no shell event: {events:#?}"));
    let path = shell["recording"]["path"].as_str().unwrap_or_default();
    let cast = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    cast.lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e[1] == "o")
        .filter_map(|e| e[2].as_str().map(str::to_owned))
        .collect()
}

fn events_of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn typed_lines_are_denied_held_approved_and_withdrawn_at_enter() {
    let Some(s) = setup("ssh-shell-lines", "127.0.0.101", RULES) else {
        return;
    };
    let dir = scratch();
    let victim = scratch_file(&dir, "victim");
    std::fs::write(&victim, "keep me").unwrap_or_else(|e| panic!("{e}"));
    let made = scratch_file(&dir, "made");
    let withdrawn = scratch_file(&dir, "withdrawn");
    let mut t = Terminal::open(&s);
    // root's prompt (Debian's or bash's own) ends with "# ".
    t.expect("# ", &s);
    t.sync("ready-1", &s);

    // (a) A denied line never reaches the shell; the terminal says why.
    t.type_line(&format!("rm -rf {}", victim.display()), &s);
    t.expect("portcullis: command line refused: rule `no-rm` denies", &s);
    let seen = t.expect("# ", &s);
    t.sync("after-deny", &s);
    assert!(victim.exists(), "a denied typed rm ran: {seen:?}");

    // (b) A reviewed line waits at Enter and runs once approved.
    t.type_line(&format!("touch {}", made.display()), &s);
    t.expect("portcullis approve ", &s);
    let request = s.wait_request();
    let id = request["id"].as_str().unwrap_or_default().to_owned();
    assert!(!made.exists(), "a held typed line ran before approval");
    let out = s.d.cli(&["approve", &id, "--reason", "ok"]);
    assert!(out.status.success(), "{}", text(&out).1);
    // Keystrokes while a line is held are dropped: wait for the shell's next prompt.
    t.expect("# ", &s);
    t.sync("after-approve", &s);
    assert!(made.exists(), "the approved typed line did not run");

    // (c) Ctrl-C while held withdraws the request; the line never runs.
    t.type_line(&format!("touch {}", withdrawn.display()), &s);
    t.expect("portcullis approve ", &s);
    let held = s.wait_request();
    let held_id = held["id"].as_str().unwrap_or_default().to_owned();
    assert_ne!(held_id, id);
    t.send(b"\x03");
    t.expect("abandoned", &s);
    t.expect("# ", &s);
    t.sync("after-withdraw", &s);
    let seen = t.exit(&s);
    assert!(!withdrawn.exists(), "a withdrawn typed line ran: {seen:?}");

    let events = s.events();
    let lines = events_of_kind(&events, "shell-line");
    let verdict_of = |needle: &str| verdict_of(&lines, needle);
    assert_eq!(verdict_of("rm -rf"), "denied");
    assert_eq!(verdict_of("/made"), "approved");
    assert_eq!(verdict_of("/withdrawn"), "abandoned");
    assert_eq!(verdict_of("echo ready-1"), "allowed");
    // The recording shows what the terminal showed, Portcullis' own lines too.
    let output = cast_output(&events);
    for told in [
        "command line refused: rule `no-rm` denies",
        &format!("held for approval (request {held_id})"),
    ] {
        assert!(output.contains(told), "{told:?} is not in {output:?}");
    }
}

#[test]
fn a_secret_broken_by_an_sgr_code_is_masked_and_a_password_is_not_decided() {
    let Some(s) = setup("ssh-shell-mask", "127.0.0.102", RULES) else {
        return;
    };
    let mut t = Terminal::open(&s);
    // root's prompt (Debian's or bash's own) ends with "# ".
    t.expect("# ", &s);
    t.sync("ready-2", &s);
    // What `grep --color` does to a match: the value in two pieces around a code.
    t.type_line(r"printf 'pw=hunter2\033[1msecret\033[0m end\n'", &s);
    t.expect(" end\r\n", &s);
    // Typing the terminal does not echo (a password) is never decided nor recorded,
    // though it reads like a denied command.
    t.type_line("read -s -p 'Password: ' pw", &s);
    t.expect("Password: ", &s);
    t.send(b"rm -rf /nothing-hunter");
    t.send(b"\r");
    t.sync("after-password", &s);
    let seen = t.exit(&s);
    assert!(!seen.contains("refused"), "{seen:?}");
    assert!(seen.contains("pw="), "{seen:?}");
    assert!(
        !seen.contains("hunter2\x1b[1msecret"),
        "the client saw the secret: {seen:?}"
    );
    assert!(seen.contains("\x1b[1m"), "the escape is kept: {seen:?}");

    let events = s.events();
    assert!(
        !events
            .iter()
            .any(|e| e.to_string().contains("nothing-hunter")),
        "unechoed typing was recorded: {events:#?}"
    );
    let output = cast_output(&events);
    assert!(output.contains("pw="), "{output:?}");
    assert!(
        !output.contains("hunter2\x1b[1msecret"),
        "the recording holds the secret: {output:?}"
    );
}

/// Issue 18, item 4 (typed lines): bash turns bracketed paste on at its prompt, so a
/// pasted block's line breaks run nothing until the Enter after it; that Enter
/// decides every line of the block (a block holding `rm` is refused whole, a
/// harmless one runs).
#[test]
fn a_bracketed_paste_is_decided_line_by_line_at_the_enter_after_it() {
    let Some(s) = setup("ssh-shell-paste", "127.0.0.124", RULES) else {
        return;
    };
    let dir = scratch();
    let victim = scratch_file(&dir, "victim");
    std::fs::write(&victim, "keep me").unwrap_or_else(|e| panic!("{e}"));
    let mut t = Terminal::open(&s);
    let seen = t.expect("# ", &s);
    assert!(
        seen.contains("\x1b[?2004h"),
        "bash did not turn bracketed paste on (readline >= 8.1 does): {seen:?}"
    );
    t.sync("ready-3", &s);

    // What a terminal sends for a pasted block: its line breaks as CRs, in markers.
    // The `rm` first: the row the cursor ends on shows only the last line.
    let block = format!(
        "\x1b[200~rm -rf {}\recho pasted-one\recho pasted-two\x1b[201~",
        victim.display()
    );
    t.send(block.as_bytes());
    t.send(b"\r");
    t.expect("portcullis: command line refused: rule `no-rm` denies", &s);
    t.expect("# ", &s);
    t.sync("after-block", &s);
    t.send(b"\x1b[200~echo calm-one\recho calm-two\x1b[201~");
    t.send(b"\r");
    t.sync("after-calm", &s);
    let seen = t.exit(&s);
    assert!(victim.exists(), "a pasted rm ran: {seen:?}");
    // The block's output, as opposed to its echo (reverse video, one line each).
    assert!(
        !seen.contains("pasted-one\r\npasted-two\r\n"),
        "a line of a refused block ran: {seen:?}"
    );
    assert!(
        seen.contains("calm-one\r\ncalm-two\r\n"),
        "the harmless block did not run: {seen:?}"
    );

    let events = s.events();
    let lines = events_of_kind(&events, "shell-line");
    let verdict_of = |needle: &str| verdict_of(&lines, needle);
    assert_eq!(verdict_of("echo pasted-one"), "denied");
    assert_eq!(verdict_of("echo calm-one"), "allowed");
}

/// The verdict of the `shell-line` event among `lines` whose line contains `needle`.
fn verdict_of(lines: &[&Value], needle: &str) -> String {
    lines
        .iter()
        .find(|e| e["line"].as_str().is_some_and(|l| l.contains(needle)))
        .map_or_else(
            || panic!("no shell-line event for {needle}: {lines:#?}"),
            |e| e["verdict"].as_str().unwrap_or_default().to_owned(),
        )
}
