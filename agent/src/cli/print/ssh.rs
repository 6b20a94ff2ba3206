//! SSH events in a replay transcript: the command line or what was opened, the
//! login, how it ended (exit status, bytes), a masked output sample, and where a
//! shell's terminal recording is.

use super::{at, clean};
use serde_json::Value;

/// What an SSH event adds to its transcript: the tag, lines, and result.
pub(super) fn shown(kind: &str, d: &Value) -> (String, Vec<String>, Option<String>) {
    let mut lines = Vec::new();
    let login = at(d, "/login").as_str().unwrap_or("?");
    match kind {
        "exec" | "scp" => {
            let command = clean(at(d, "/command").as_str().unwrap_or_default(), true);
            lines.extend(command.lines().map(|l| format!("    $ {l}")));
        }
        // A command line typed in a shell, decided at Enter.
        "shell-line" => {
            let line = clean(at(d, "/line").as_str().unwrap_or_default(), false);
            lines.push(format!("    typed $ {line}"));
        }
        "shell" => {
            let pty = at(d, "/pty");
            let size = match (at(pty, "/cols").as_u64(), at(pty, "/rows").as_u64()) {
                (Some(c), Some(r)) => format!(" ({c}x{r})"),
                _ => String::new(),
            };
            lines.push(format!("    interactive shell{size}"));
        }
        "forward" => lines.push(format!(
            "    to {}:{}",
            clean(at(d, "/host").as_str().unwrap_or("?"), false),
            at(d, "/port")
        )),
        _ => {
            if let Some(subject) = at(d, "/subsystem")
                .as_str()
                .or_else(|| at(d, "/subject").as_str())
            {
                lines.push(format!("    {}", clean(subject, false)));
            }
        }
    }
    lines.push(format!("    login    {}", clean(login, false)));
    if let Some(sample) = at(d, "/output_sample").as_str().filter(|s| !s.is_empty()) {
        lines.push("    output".to_owned());
        lines.extend(
            clean(sample.trim_end(), true)
                .lines()
                .map(|l| format!("      {l}")),
        );
    }
    if let Some(path) = at(d, "/recording/path").as_str() {
        lines.push(format!(
            "    recording {} (asciicast v2)",
            clean(path, false)
        ));
    }
    let mut result = Vec::new();
    if let Some(status) = at(d, "/exit_status").as_u64() {
        result.push(format!("exit {status}"));
    }
    if let Some(signal) = at(d, "/exit_signal").as_str() {
        result.push(format!("signal {}", clean(signal, false)));
    }
    if let (Some(i), Some(o)) = (at(d, "/bytes_in").as_u64(), at(d, "/bytes_out").as_u64()) {
        result.push(format!("{i} bytes in, {o} out"));
    }
    let result = (!result.is_empty()).then(|| result.join(", "));
    (kind.to_owned(), lines, result)
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exec_shows_command_login_output_and_result() {
        let d = json!({
            "command": "ls /\nrm x", "login": "deploy", "output_sample": "bin\netc\n",
            "exit_status": 2, "bytes_in": 0, "bytes_out": 8,
        });
        let (tag, lines, result) = shown("exec", &d);
        assert_eq!(tag, "exec");
        assert_eq!(
            lines,
            [
                "    $ ls /",
                "    $ rm x",
                "    login    deploy",
                "    output",
                "      bin",
                "      etc"
            ]
        );
        assert_eq!(result.as_deref(), Some("exit 2, 0 bytes in, 8 out"));
        let shell = json!({"login": "a", "pty": {"cols": 80, "rows": 24}, "recording": {"path": "/r/x.cast"}});
        let (_, lines, _) = shown("shell", &shell);
        assert_eq!(lines[0], "    interactive shell (80x24)");
        assert!(lines[2].contains("/r/x.cast"));
        let (tag, lines, _) = shown("shell-line", &json!({"login": "a", "line": "rm -rf /x"}));
        assert_eq!(tag, "shell-line");
        assert_eq!(lines[0], "    typed $ rm -rf /x");
    }
}
