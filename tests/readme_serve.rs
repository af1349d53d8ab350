//! The README's "Serving from Kafka" block, run as written: a newcomer's
//! path from `scripts/services.sh up` to a `serve` that stores what the
//! simulator sends. The block's text is read from README.md, so a change
//! there is a change here.
//!
//! It runs in a scratch directory laid out like a checkout (links to
//! `scripts/`, `.services/`, `.venv/`, `models/`, `fraudflight.toml`), whose
//! `target/release/fraudflight` is this test build's binary: the commands are
//! the README's, character for character, except `make build` (this binary
//! is already built). Run by `make test-services`.

mod support;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const MARKER: &str = "<!-- tests/readme_serve.rs runs this block as written -->";

/// The shell lines of the README block after [`MARKER`].
fn readme_block() -> Vec<String> {
    let readme = std::fs::read_to_string(format!("{}/README.md", support::manifest_dir())).unwrap();
    let after = readme.split_once(MARKER).expect("README keeps the marked serve block").1;
    let body = after.split_once("```sh\n").unwrap().1.split_once("```").unwrap().0;
    body.lines().map(String::from).collect()
}

/// A directory shaped like a checkout, whose release binary is this build's.
fn checkout() -> tempfile::TempDir {
    let root = PathBuf::from(support::manifest_dir());
    let dir = tempfile::tempdir().unwrap();
    for name in ["scripts", ".services", ".venv", "models", "fraudflight.toml"] {
        std::os::unix::fs::symlink(root.join(name), dir.path().join(name)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(support::fraudflight_bin(), dir.path().join("target/release/fraudflight")).unwrap();
    dir
}

/// `pid` itself if its command line contains `word` (bash runs the last
/// command of `-c` in its own process), else its child that does.
fn process_running(pid: u32, word: &str) -> Option<u32> {
    // Arguments are NUL-separated.
    let matches = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(word))
    };
    if matches(pid) {
        return Some(pid);
    }
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().filter_map(|p| p.parse().ok()).find(|child: &u32| matches(*child))
}

#[tokio::test]
#[ignore = "needs Kafka, Cassandra, OpenSearch (make test-services starts them)"]
async fn the_readme_serve_commands_work_as_written() {
    let lines = readme_block();
    assert_eq!(lines.first().map(|l| l.starts_with("make build")), Some(true), "{lines:?}");
    let script = lines[1..].join("\n");
    assert!(script.contains("scripts/services.sh up") && script.contains("fraudflight serve"), "{script}");
    let dir = checkout();
    let root = PathBuf::from(support::manifest_dir());
    let log = dir.path().join("serve.log");
    let mut shell = Command::new("bash")
        // Its own process group, so whatever happens the guard below stops
        // the shell, the background simulate and serve together.
        .process_group(0)
        .args(["-ec", &script])
        .current_dir(dir.path())
        // The services' state stays the checkout's own (.services is linked).
        .env("FRAUDFLIGHT_SERVICES_DIR", root.join(".services"))
        // Only what the README gives serve: no test variable leaks in.
        .env_remove("FRAUDFLIGHT_CASSANDRA_USERNAME")
        .env_remove("FRAUDFLIGHT_CASSANDRA_PASSWORD")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _group = KillGroupOnDrop(shell.id());
    let rx = support::stack::ready_lines(shell.stdout.take().unwrap());
    let ready = rx.recv_timeout(Duration::from_secs(300)).unwrap_or_else(|_| {
        let _ = shell.kill();
        panic!("serve never printed READY; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default())
    });
    let http = ready.split_whitespace().find_map(|w| w.strip_prefix("http=http://")).unwrap().to_string();

    // Every simulated record is stored: at least the README's 20,000, and
    // nothing left behind in the topic (a rerun on long-lived services may
    // find records an interrupted run left; the group resumes from its
    // committed offsets, which advance only over stored records).
    let counts = || {
        let text = metrics_text(&http);
        let sum = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        (sum("fraudflight_records_stored_total"), sum("fraudflight_consumer_lag"))
    };
    support::stack::wait_until(Duration::from_secs(180), "the README's 20,000 records stored, no lag", || async {
        let (stored, lag) = counts();
        stored >= 20_000.0 && lag == 0.0
    })
    .await;
    // Ctrl-C / SIGTERM drains, commits, exits (the README's comment).
    let serve = process_running(shell.id(), " serve").expect("serve runs under the README's shell");
    assert!(Command::new("kill").arg("-TERM").arg(serve.to_string()).status().unwrap().success());
    let status = shell.wait().unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "serve exits cleanly after SIGTERM: {status}; log:\n{log_text}");
    assert!(!log_text.contains("ERROR"), "no error in the log:\n{log_text}");
}

/// `/metrics` of the server at `addr` (empty while it does not answer).
fn metrics_text(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return String::new() };
    let _ = write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// Kills a process group when dropped (a failed assertion included), so no
/// serve outlives the test holding the README's ports.
struct KillGroupOnDrop(u32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", self.0)]).status();
    }
}
