//! Splitting an SSH command line into the simple commands it runs, on a real shell
//! parser, so rules match what runs: `ls; rm -rf /data` runs `rm`, so does
//! `echo $(rm -rf /data)`, `sh -c 'rm -rf /data'` and `bash <<EOF … EOF`.
//!
//! The parser is `brush-parser` (the POSIX/bash parser of the brush shell, maintained
//! and tested against bash's behaviour): it gives a typed AST of lists, pipelines,
//! compound commands, redirections and here-documents, and splits words into pieces
//! (so command substitutions are found inside double quotes). A line it cannot parse,
//! or one nested deeper than [`MAX_DEPTH`] or with more than [`MAX_COMMANDS`] simple
//! commands, is [`Split::Unparsed`]: the policy treats it as the most restrictive case.
//!
//! brush-parser is not built for hostile input: fuzzing found lines that make it
//! panic, spin for seconds, or grow its memory past 2 GiB within minutes, and a user
//! can send any line with `ssh host 'LINE'`. So the daemon never parses in its own
//! process: [`pool::split`] hands each line to a long-lived worker process (the
//! `portcullis` binary re-executed, [`worker`]) with a memory and CPU limit and a
//! per-line deadline; a worker that crashes, hits a limit or misses the deadline is
//! killed and replaced, and that line is `unparsed`. [`split_unbounded`] is the
//! parse itself, what the worker runs. The cheap checks in `guards` refuse the
//! shapes already known to blow up, before the parser sees them.

use brush_parser::{
    ParserOptions,
    ast::{
        self, Command, CommandPrefixOrSuffixItem, CompoundCommand, CompoundList, IoRedirect,
        Pipeline,
    },
    word::{self, WordPiece},
};

mod guards;
pub mod pool;
pub mod worker;

/// How deep `sh -c`, `$(…)` and here-documents may nest before the line is unparsed.
const MAX_DEPTH: usize = 8;
/// More simple commands than this: unparsed (a bound on the work per line).
const MAX_COMMANDS: usize = 256;
/// Characters that make the shell expand a word (parameters, substitutions, globs,
/// braces). A command's name written with one (`$x`, `r?`, `{rm,-rf,/d}`) is only
/// known when it runs, so such a command is `unparsed`, as is any word in `$'…'` or
/// `$"…"` quoting, which the splitter does not decode (`$'rm' -rf /` runs `rm`).
const EXPANDS: &[char] = &['$', '`', '*', '?', '[', '{'];
/// Longer command lines are not parsed (they are unparsed).
pub const MAX_LINE: usize = 64 * 1024;

/// Shells whose `-c` argument and here-document are scripts.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"];
/// Commands that run their arguments as a command (`sudo rm …`).
const WRAPPERS: &[&str] = &[
    "sudo", "env", "nohup", "time", "nice", "exec", "command", "timeout",
];

/// The simple commands of a command line, or why there are none to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// Each simple command's words as written (quotes removed), joined by spaces.
    Commands(Vec<String>),
    /// The line could not be parsed (or was too large or deep).
    Unparsed,
}

/// The simple commands `line` runs, parsed in this process: only the worker (and
/// tests) call it; the daemon calls [`pool::split`].
#[must_use]
pub fn split_unbounded(line: &str) -> Split {
    if line.len() > MAX_LINE {
        return Split::Unparsed;
    }
    let mut out = Vec::new();
    match script(line, 0, &mut out) {
        Some(()) if out.len() <= MAX_COMMANDS => Split::Commands(out),
        _ => Split::Unparsed,
    }
}

fn options() -> ParserOptions {
    ParserOptions::default()
}

/// Parses `text` as a script and appends its simple commands; `None`: unparsed.
fn script(text: &str, depth: usize, out: &mut Vec<String>) -> Option<()> {
    if depth > MAX_DEPTH || guards::refuses(text) {
        return None;
    }
    let program = guarded(|| {
        brush_parser::Parser::new(std::io::Cursor::new(text), &options())
            .parse_program()
            .ok()
    })?;
    for list in &program.complete_commands {
        compound_list(list, depth, out)?;
    }
    Some(())
}

/// What `parse` makes of hostile text, or `None` if it panics: the parser unwraps
/// some numbers it reads (a redirect from fd `88888888888888888` panicked, found by
/// the `ssh_command` fuzz target), and a client's command line must not end its
/// session's task, only be `unparsed`.
fn guarded<T>(parse: impl FnOnce() -> Option<T>) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse))
        .ok()
        .flatten()
}

fn compound_list(list: &CompoundList, depth: usize, out: &mut Vec<String>) -> Option<()> {
    for ast::CompoundListItem(and_or, _) in &list.0 {
        pipeline(&and_or.first, depth, out)?;
        for next in &and_or.additional {
            let (ast::AndOr::And(p) | ast::AndOr::Or(p)) = next;
            pipeline(p, depth, out)?;
        }
    }
    Some(())
}

fn pipeline(p: &Pipeline, depth: usize, out: &mut Vec<String>) -> Option<()> {
    for command in &p.seq {
        self::command(command, depth, out)?;
    }
    Some(())
}

fn command(c: &Command, depth: usize, out: &mut Vec<String>) -> Option<()> {
    if out.len() > MAX_COMMANDS {
        return None;
    }
    match c {
        Command::Simple(simple) => simple_command(simple, depth, out),
        Command::Compound(compound, redirects) => {
            compound_command(compound, depth, out)?;
            for r in redirects.iter().flat_map(|r| &r.0) {
                redirect(r, None, depth, out)?;
            }
            Some(())
        }
        Command::Function(f) => compound_command(&f.body.0, depth, out),
        // `[[ … ]]` runs no command, but its words may hold substitutions.
        Command::ExtendedTest(test, _) => substitutions(&test.to_string(), depth, out),
    }
}

fn compound_command(c: &CompoundCommand, depth: usize, out: &mut Vec<String>) -> Option<()> {
    match c {
        CompoundCommand::BraceGroup(g) => compound_list(&g.list, depth, out),
        CompoundCommand::Subshell(s) => compound_list(&s.list, depth, out),
        CompoundCommand::ForClause(f) => {
            for w in f.values.iter().flatten() {
                substitutions(&w.value, depth, out)?;
            }
            compound_list(&f.body.list, depth, out)
        }
        CompoundCommand::ArithmeticForClause(f) => compound_list(&f.body.list, depth, out),
        CompoundCommand::CaseClause(c) => {
            substitutions(&c.value.value, depth, out)?;
            for item in &c.cases {
                if let Some(list) = &item.cmd {
                    compound_list(list, depth, out)?;
                }
            }
            Some(())
        }
        CompoundCommand::IfClause(i) => {
            compound_list(&i.condition, depth, out)?;
            compound_list(&i.then, depth, out)?;
            for e in i.elses.iter().flatten() {
                if let Some(cond) = &e.condition {
                    compound_list(cond, depth, out)?;
                }
                compound_list(&e.body, depth, out)?;
            }
            Some(())
        }
        CompoundCommand::WhileClause(w) | CompoundCommand::UntilClause(w) => {
            compound_list(&w.0, depth, out)?;
            compound_list(&w.1.list, depth, out)
        }
        CompoundCommand::Coprocess(c) => command(&c.body, depth, out),
        // The parser also reads `( ( cmd ) )` (two subshells to bash) as arithmetic,
        // which runs no command: an arithmetic command cannot be told from that.
        CompoundCommand::Arithmetic(_) => None,
    }
}

fn simple_command(s: &ast::SimpleCommand, depth: usize, out: &mut Vec<String>) -> Option<()> {
    let mut words = Vec::new();
    // Each word as written, quotes and all: what the shell will expand.
    let mut raw = Vec::new();
    let mut redirects = Vec::new();
    let items = s.prefix.iter().flat_map(|p| &p.0);
    let name: Vec<_> = s
        .word_or_name
        .iter()
        .map(|w| CommandPrefixOrSuffixItem::Word(w.clone()))
        .collect();
    let suffix = s.suffix.iter().flat_map(|p| &p.0);
    for item in items.chain(name.iter()).chain(suffix) {
        match item {
            CommandPrefixOrSuffixItem::Word(w) => {
                substitutions(&w.value, depth, out)?;
                words.push(brush_parser::unquote_str(&w.value));
                raw.push(w.value.as_str());
            }
            CommandPrefixOrSuffixItem::AssignmentWord(_, w) => {
                substitutions(&w.value, depth, out)?;
                // After the command name it is an argument (`env X=1 …`).
                if !words.is_empty() {
                    words.push(brush_parser::unquote_str(&w.value));
                    raw.push(w.value.as_str());
                }
            }
            CommandPrefixOrSuffixItem::IoRedirect(r) => redirects.push(r.clone()),
            CommandPrefixOrSuffixItem::ProcessSubstitution(_, sub) => {
                compound_list(&sub.list, depth, out)?;
            }
        }
    }
    let unwrapped = unwrap_wrappers(&words);
    let named_by = raw.get(..=words.len().saturating_sub(unwrapped.len()));
    if raw.iter().any(|w| w.contains("$'") || w.contains("$\""))
        || named_by.is_some_and(|name| name.iter().any(|w| w.contains(EXPANDS)))
    {
        return None;
    }
    let program = unwrapped.first().map(|w| basename(w));
    let is_shell = program.is_some_and(|p| SHELLS.contains(&p));
    for r in redirects {
        redirect(&r, is_shell.then_some(()), depth, out)?;
    }
    if words.is_empty() {
        return Some(());
    }
    out.push(words.join(" "));
    if unwrapped.len() < words.len() {
        out.push(unwrapped.join(" "));
    }
    if is_shell && let Some(inner) = shell_c_argument(unwrapped) {
        script(inner, depth + 1, out)?;
    }
    Some(())
}

/// The command `sudo`, `env X=1`, `nohup`… run, so it is matched by its own name too.
fn unwrap_wrappers(words: &[String]) -> &[String] {
    let mut rest = words;
    while let Some(first) = rest.first() {
        if !WRAPPERS.contains(&basename(first)) {
            break;
        }
        // The wrapper itself was pushed with its arguments; skip it and its options.
        rest = rest.get(1..).unwrap_or_default();
        while rest
            .first()
            .is_some_and(|w| w.starts_with('-') || w.contains('='))
        {
            rest = rest.get(1..).unwrap_or_default();
        }
    }
    if rest.is_empty() { words } else { rest }
}

/// The script of `sh -c SCRIPT …` (also `-ec`, `-xc`…).
fn shell_c_argument(words: &[String]) -> Option<&str> {
    let mut args = words.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg.starts_with('-') && !arg.starts_with("--") && arg.contains('c') {
            return args.next().map(String::as_str);
        }
        if !arg.starts_with('-') {
            return None;
        }
    }
    None
}

/// A here-document given to a shell is a script; other redirections may hold
/// substitutions in their words.
fn redirect(r: &IoRedirect, shell: Option<()>, depth: usize, out: &mut Vec<String>) -> Option<()> {
    match r {
        IoRedirect::HereDocument(_, doc) => {
            if shell.is_some() {
                script(&doc.doc.value, depth + 1, out)
            } else if doc.requires_expansion {
                substitutions(&doc.doc.value, depth, out)
            } else {
                Some(())
            }
        }
        IoRedirect::HereString(_, w) | IoRedirect::OutputAndError(w, _) => {
            substitutions(&w.value, depth, out)
        }
        IoRedirect::File(_, _, target) => match target {
            ast::IoFileRedirectTarget::Filename(w) | ast::IoFileRedirectTarget::Duplicate(w) => {
                substitutions(&w.value, depth, out)
            }
            ast::IoFileRedirectTarget::ProcessSubstitution(_, sub) => {
                compound_list(&sub.list, depth, out)
            }
            ast::IoFileRedirectTarget::Fd(_) => Some(()),
        },
    }
}

/// The commands inside `$(…)` and backquotes of a word.
fn substitutions(text: &str, depth: usize, out: &mut Vec<String>) -> Option<()> {
    if !text.contains("$(") && !text.contains('`') {
        return Some(());
    }
    let pieces = guarded(|| word::parse(text, &options()).ok())?;
    pieces_substitutions(&pieces, depth, out)
}

fn pieces_substitutions(
    pieces: &[word::WordPieceWithSource],
    depth: usize,
    out: &mut Vec<String>,
) -> Option<()> {
    for piece in pieces {
        match &piece.piece {
            WordPiece::CommandSubstitution(inner)
            | WordPiece::BackquotedCommandSubstitution(inner) => script(inner, depth + 1, out)?,
            WordPiece::DoubleQuotedSequence(seq) | WordPiece::GettextDoubleQuotedSequence(seq) => {
                pieces_substitutions(seq, depth, out)?;
            }
            _ => {}
        }
    }
    Some(())
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

#[cfg(test)]
mod tests;
