//! Every command the README and the pages under `docs/` give a reader,
//! checked against what it names, so the pages cannot drift from the code:
//!
//! - `fraudflight ...` (or `target/release/fraudflight ...`) parses with the
//!   command line's own definition ([`fraudflight::cli::Cli`]);
//! - `make X` names a target of the Makefile;
//! - `scripts/...` and the Python jobs exist (after the block's own `cd`);
//! - every long option given to a Python job is one its argument parser
//!   defines;
//! - `cargo test --test X` names a test file.
//!
//! Commands are read from shell blocks (```sh) and from inline code that
//! starts like one. Running them needs the services, Spark or a browser:
//! the blocks that need them run in their own tests (`tests/readme_serve.rs`
//! runs the README's serve block as written; the training, loop and
//! dashboard commands are what `spark-job/tests`, `tests/model_quality.rs`
//! and `dashboards/` run).

mod support;

use std::path::{Path, PathBuf};

use clap::Parser;

/// One command as a page gives it.
#[derive(Debug)]
struct Command {
    page: String,
    line: usize,
    /// The directory it runs in, relative to the repository (a block's `cd`).
    dir: PathBuf,
    words: Vec<String>,
}

impl Command {
    fn place(&self) -> String {
        format!("{}:{}: `{}`", self.page, self.line, self.words.join(" "))
    }
}

fn root() -> PathBuf {
    PathBuf::from(support::manifest_dir())
}

fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// Shell words of one logical line; None when the quoting does not close.
fn words(line: &str) -> Option<Vec<String>> {
    shlex::split(line)
}

/// Splits a line's words into commands at `&&`, `||`, `|`, `;` and `&`.
fn split_commands(words: Vec<String>) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    for w in words {
        match w.as_str() {
            "&&" | "||" | "|" | ";" | "&" => commands.push(Vec::new()),
            _ => commands.last_mut().expect("one at least").push(w),
        }
    }
    commands.retain(|c| !c.is_empty());
    commands
}

/// Inline code that reads as a command.
fn inline_command(code: &str) -> bool {
    ["fraudflight ", "target/release/fraudflight ", "make ", "scripts/", "cargo test --test "]
        .iter()
        .any(|p| code.starts_with(p))
}

fn commands_of(page: &Path) -> Vec<Command> {
    let text = std::fs::read_to_string(page).expect("a page");
    let name = page.strip_prefix(root()).unwrap_or(page).display().to_string();
    let mut out = Vec::new();
    // Some(language) inside a fence.
    let mut fence: Option<String> = None;
    let mut dir = PathBuf::new();
    let mut pending = String::new();
    let mut pending_line = 0;
    // A paragraph of prose and its first line.
    let mut prose = (String::new(), 0);
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            // Each block starts where the reader starts: the repository.
            fence = match fence {
                Some(_) => None,
                None => {
                    dir = PathBuf::new();
                    Some(lang.trim().to_string())
                }
            };
            paragraph(&mut prose, &name, &mut out);
            continue;
        }
        match fence.as_deref() {
            Some("sh" | "bash" | "shell") => {
                if pending.is_empty() {
                    pending_line = n;
                }
                match line.strip_suffix('\\') {
                    Some(head) => {
                        pending.push_str(head);
                        pending.push(' ');
                        continue;
                    }
                    None => pending.push_str(line),
                }
                let logical = std::mem::take(&mut pending);
                let Some(words) = words(&logical) else {
                    out.push(Command {
                        page: name.clone(),
                        line: pending_line,
                        dir: dir.clone(),
                        words: vec![logical],
                    });
                    continue;
                };
                for words in split_commands(words) {
                    if words[0] == "cd" {
                        dir = dir.join(words.get(1).map_or("", String::as_str));
                        continue;
                    }
                    out.push(Command { page: name.clone(), line: pending_line, dir: dir.clone(), words });
                }
            }
            Some(_) => {}
            // Prose: inline code may wrap across lines, so a paragraph is
            // read whole.
            None if line.trim().is_empty() => paragraph(&mut prose, &name, &mut out),
            None => {
                if prose.0.is_empty() {
                    prose.1 = n;
                }
                prose.0.push_str(line);
                prose.0.push(' ');
            }
        }
    }
    paragraph(&mut prose, &name, &mut out);
    out
}

/// The commands in a paragraph's inline code (between pairs of
/// backticks); a usage synopsis (`[--option]`, `a|b`, `...`) is not one.
fn paragraph(prose: &mut (String, usize), page: &str, out: &mut Vec<Command>) {
    let (text, line) = (std::mem::take(&mut prose.0), prose.1);
    for (k, code) in text.split('`').enumerate() {
        let synopsis = code.contains('[') || code.contains('|') || code.contains("...");
        if k % 2 == 0 || !inline_command(code) || synopsis {
            continue;
        }
        if let Some(words) = words(code) {
            for words in split_commands(words) {
                out.push(Command { page: page.to_string(), line, dir: PathBuf::new(), words });
            }
        }
    }
}

/// The Makefile's targets.
fn make_targets() -> Vec<String> {
    let makefile = std::fs::read_to_string(root().join("Makefile")).expect("Makefile");
    makefile
        .lines()
        .filter(|l| !l.starts_with(['\t', '#', ' ', '.']))
        .filter_map(|l| l.split_once(':').map(|(t, _)| t))
        .filter(|t| !t.contains('=') && !t.contains('$'))
        .flat_map(|t| t.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// A word with a page's placeholder brackets taken off: `[--shadow]`.
fn unbracket(word: &str) -> &str {
    word.strip_prefix('[').and_then(|w| w.strip_suffix(']')).unwrap_or(word)
}

/// What is wrong with one command, if anything; None when it is not one
/// this test knows how to check.
fn check(command: &Command, targets: &[String]) -> Option<Result<(), String>> {
    // Leading variable assignments (`DEMO_ARGS=... make demo`).
    let words: Vec<&str> = command
        .words
        .iter()
        .map(String::as_str)
        .skip_while(|w| {
            w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c == '_' || c.is_ascii_uppercase() || c.is_ascii_digit())
            })
        })
        .collect();
    let (program, args) = words.split_first()?;
    let here = root().join(&command.dir);
    if *program == "make" {
        let named: Vec<&&str> = args.iter().filter(|a| !a.starts_with('-') && !a.contains('=')).collect();
        let missing: Vec<&&&str> = named.iter().filter(|t| !targets.iter().any(|m| m == **t)).collect();
        return Some(if missing.is_empty() { Ok(()) } else { Err(format!("no Makefile target {missing:?}")) });
    }
    if *program == "fraudflight" || program.ends_with("/fraudflight") {
        let argv = std::iter::once("fraudflight").chain(args.iter().map(|a| unbracket(a)));
        return Some(match fraudflight::cli::Cli::try_parse_from(argv) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) =>
            {
                Ok(())
            }
            Err(e) => Err(format!("the command line refuses it: {}", e.to_string().lines().next().unwrap_or(""))),
        });
    }
    if *program == "cargo" && args.first() == Some(&"test") {
        let named = args.windows(2).filter(|w| w[0] == "--test").map(|w| w[1]);
        let missing: Vec<&str> = named.filter(|t| !root().join("tests").join(format!("{t}.rs")).exists()).collect();
        return Some(if missing.is_empty() { Ok(()) } else { Err(format!("no test file for {missing:?}")) });
    }
    if program.contains("scripts/") {
        let path = here.join(program);
        return Some(if path.exists() { Ok(()) } else { Err(format!("{} does not exist", path.display())) });
    }
    let python = program.ends_with("/python") || program.ends_with("python3") || program.ends_with("spark-submit");
    if python {
        let at = args.iter().position(|a| a.ends_with(".py"))?;
        let script = here.join(args[at]);
        let Ok(source) = std::fs::read_to_string(&script) else {
            return Some(Err(format!("{} does not exist", script.display())));
        };
        let unknown: Vec<&str> = args[at + 1..]
            .iter()
            .map(|a| unbracket(a))
            .filter(|a| a.starts_with("--"))
            .map(|a| a.split_once('=').map_or(a, |(k, _)| k))
            .filter(|flag| !source.contains(&format!("\"{flag}\"")))
            .collect();
        return Some(if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!("{} defines no option {unknown:?}", script.display()))
        });
    }
    None
}

#[test]
fn every_command_in_the_readme_and_the_docs_names_what_exists() {
    let targets = make_targets();
    assert!(targets.iter().any(|t| t == "demo") && targets.iter().any(|t| t == "test"), "targets read: {targets:?}");
    let commands: Vec<Command> = pages().iter().flat_map(|p| commands_of(p)).collect();
    let mut checked = 0;
    let mut problems = Vec::new();
    for command in &commands {
        match check(command, &targets) {
            Some(Ok(())) => checked += 1,
            Some(Err(problem)) => problems.push(format!("{}: {problem}", command.place())),
            None => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} commands checked are wrong:\n{}",
        problems.len(),
        checked + problems.len(),
        problems.join("\n")
    );
    // The pages give dozens; a parser that found none would pass vacuously.
    assert!(checked >= 40, "only {checked} commands found in the pages: {commands:#?}");
}

#[test]
fn the_checks_refuse_what_does_not_exist() {
    let targets = make_targets();
    let command = |words: &[&str], dir: &str| Command {
        page: "test".into(),
        line: 1,
        dir: dir.into(),
        words: words.iter().map(|w| w.to_string()).collect(),
    };
    let refused = |c: Command| matches!(check(&c, &targets), Some(Err(_)));
    assert!(refused(command(&["make", "no-such-target"], "")));
    assert!(refused(command(&["fraudflight", "simulate", "--no-such-flag"], "")));
    assert!(refused(command(&["target/release/fraudflight", "serve", "--config"], "")), "a value is missing");
    assert!(refused(command(&["scripts/no-such.sh", "up"], "")));
    assert!(refused(command(&["../.venv/bin/python", "train.py", "--no-such-option", "1"], "spark-job")));
    assert!(refused(command(&["../.venv/bin/python", "no_such.py"], "spark-job")));
    assert!(refused(command(&["cargo", "test", "--test", "no_such_test"], "")));
    // And accept what does.
    let accepted = |c: Command| matches!(check(&c, &targets), Some(Ok(())));
    assert!(accepted(command(&["DEMO_ARGS=--rate 5", "make", "demo"], "")));
    assert!(accepted(command(&["fraudflight", "query", "recent", "--limit", "5"], "")));
    assert!(accepted(command(&["../.venv/bin/python", "train.py", "--input", "x", "--output", "y"], "spark-job")));
    assert!(check(&command(&["docker", "compose", "up"], ""), &targets).is_none(), "not one it checks");
}
