//! The splitter, parsed in process (`split_unbounded`): what each kind of line
//! runs, and the shapes fuzzing found.

use super::{split_unbounded as split, *};

fn cmds(line: &str) -> Vec<String> {
    match split(line) {
        Split::Commands(c) => c,
        Split::Unparsed => vec!["<unparsed>".into()],
    }
}

#[test]
fn lists_pipelines_and_substitutions() {
    assert_eq!(cmds("ls -la /tmp"), ["ls -la /tmp"]);
    assert_eq!(cmds("ls; rm -rf /x"), ["ls", "rm -rf /x"]);
    assert_eq!(
        cmds("true && rm -rf /x || echo no"),
        ["true", "rm -rf /x", "echo no"]
    );
    assert_eq!(
        cmds("cat /etc/passwd | grep root"),
        ["cat /etc/passwd", "grep root"]
    );
    assert_eq!(
        cmds("echo $(rm -rf /x)"),
        ["rm -rf /x", "echo $(rm -rf /x)"]
    );
    assert_eq!(cmds("echo \"a `id` b\""), ["id", "echo a `id` b"]);
    assert_eq!(cmds("if true; then reboot; fi"), ["true", "reboot"]);
    assert_eq!(cmds("for f in a b; do rm $f; done"), ["rm $f"]);
}

#[test]
fn shells_and_wrappers() {
    assert_eq!(
        cmds("sh -c 'ls; rm -rf /data'"),
        ["sh -c ls; rm -rf /data", "ls", "rm -rf /data"]
    );
    assert_eq!(cmds("bash -ec \"reboot\""), ["bash -ec reboot", "reboot"]);
    assert_eq!(
        cmds("sudo -n rm -rf /x"),
        ["sudo -n rm -rf /x", "rm -rf /x"]
    );
    assert_eq!(
        cmds("/usr/bin/env X=1 systemctl restart app"),
        [
            "/usr/bin/env X=1 systemctl restart app",
            "systemctl restart app"
        ]
    );
    assert_eq!(
        cmds("bash <<EOF\nrm -rf /data\nEOF\n"),
        ["rm -rf /data", "bash"]
    );
}

#[test]
fn unparsable_is_unparsed() {
    assert_eq!(split("echo 'unterminated"), Split::Unparsed);
    assert_eq!(split("ls; )"), Split::Unparsed);
    assert_eq!(split(&"x".repeat(MAX_LINE + 1)), Split::Unparsed);
    let deep = format!("echo {}ls{}", "$(echo ".repeat(20), ")".repeat(20));
    assert_eq!(split(&deep), Split::Unparsed);
    let nested = format!("echo {}ls{}", "$(echo ".repeat(3), ")".repeat(3));
    assert!(matches!(split(&nested), Split::Commands(c) if c.len() == 4));
}

/// Found by the `ssh_command` fuzz target: 66 nested `(` kept the parser busy
/// for more than 20 s (its time doubles per level). Too deep is unparsed at once;
/// twelve levels still parse.
#[test]
fn deeply_nested_parentheses_are_unparsed_not_parsed_forever() {
    let found = format!("l3;{}+ta", "(".repeat(66));
    assert_eq!(split(&found), Split::Unparsed);
    assert_eq!(split("rm -rf 88888888888888888>x"), Split::Unparsed);
    assert_eq!(cmds("( ls )"), ["ls"]);
    // The parser reads `( (` as the start of `((` arithmetic, where bash sees two
    // subshells: `( ( rm -rf /data ) )` came out as no command at all.
    assert_eq!(split("( ( rm -rf /data ) )"), Split::Unparsed);
    assert_eq!(split("((i++))"), Split::Unparsed);
    assert_eq!(split("echo $(cat <<  x "), Split::Unparsed);
    assert_eq!(split("h;<<\u{c})"), Split::Unparsed);
    assert_eq!(cmds("cat <<<hi"), ["cat"]);
    assert_eq!(split(";l$<<-'';;;; "), Split::Unparsed);
    assert_eq!(cmds("bash <<'EOF'\nls\nEOF"), ["ls", "bash"]);
    assert_eq!(cmds("bash <<EOF\nls\nEOF"), ["ls", "bash"]);
}

/// A name the shell only knows once it expands it cannot be matched by `rm *`.
#[test]
fn names_the_shell_expands_and_ansi_c_quotes_are_unparsed() {
    for line in [
        "$'rm' -rf /data",
        "sh -c $'rm\\x20-rf /data'",
        "echo $\"x\"",
        "x=rm; $x -rf /data",
        "${x} -rf /data",
        "/bin/r? -rf /data",
        "/bin/r[m] -rf /data",
        "{rm,-rf,/data}",
        "sudo $(echo rm) -rf /data",
        "`echo rm` -rf /data",
        "sudo -u $u rm -rf /data",
    ] {
        assert_eq!(split(line), Split::Unparsed, "{line}");
    }
    assert_eq!(cmds("ls *.log $HOME"), ["ls *.log $HOME"]);
    assert_eq!(cmds("'rm' -rf /data"), ["rm -rf /data"]);
}

#[test]
fn long_lines_parse() {
    let line = "echo aaaaaaaaaaaaaaa; ".repeat(MAX_LINE / 24);
    assert!(matches!(split(&line), Split::Commands(_) | Split::Unparsed));
}
