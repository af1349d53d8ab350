//! The README's "Serving from Kafka" block, run as written: a newcomer's
//! path from `scripts/services.sh up` to a `serve` that stores what the
//! simulator sends. The block's text is read from README.md, so a change
//! there is a change here.
//!
//! It runs in a scratch directory laid out like a checkout (links to
//! `scripts/`, `.services/`, `models/`, `fraudflight.toml`), whose
//! `target/release/fraudflight` is this test build's binary: the commands are
//! the README's, character for character, except `make build` (this binary
//! is already built). Run by `make test-services`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const MARKER: &str = "<!-- tests/readme_serve.rs runs this block as written -->";

/// The shell lines of the README block after [`MARKER`].
fn readme_block() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme.split_once(MARKER).expect("README keeps the marked serve block").1;
    let body = after.split_once("```sh\n").unwrap().1.split_once("```").unwrap().0;
    body.lines().map(String::from).collect()
}

/// A directory shaped like a checkout, whose release binary is this build's.
fn checkout() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for name in ["scripts", ".services", "models", "fraudflight.toml"] {
        std::os::unix::fs::symlink(root.join(name), dir.path().join(name)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fraudflight"), dir.path().join("target/release/fraudflight"))
        .unwrap();
    dir
}

/// The pid of `parent`'s child whose command line contains `word`.
fn child_running(parent: u32, word: &str) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children.split_whitespace().filter_map(|p| p.parse().ok()).find(|pid: &u32| {
        // Arguments are NUL-separated.
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(word))
    })
}

#[tokio::test]
#[ignore = "needs Kafka, Cassandra, OpenSearch (make test-services starts them)"]
async fn the_readme_serve_commands_work_as_written() {
    let lines = readme_block();
    assert_eq!(lines.first().map(|l| l.starts_with("make build")), Some(true), "{lines:?}");
    let script = lines[1..].join("\n");
    assert!(script.contains("scripts/services.sh up") && script.contains("fraudflight serve"), "{script}");
    let dir = checkout();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let log = dir.path().join("serve.log");
    let mut shell = Command::new("bash")
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
    let rx = support::stack::ready_lines(shell.stdout.take().unwrap());
    let ready = rx.recv_timeout(Duration::from_secs(300)).unwrap_or_else(|_| {
        let _ = shell.kill();
        panic!("serve never printed READY; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default())
    });
    let http = ready.split_whitespace().find_map(|w| w.strip_prefix("http=http://")).unwrap().to_string();

    // Every simulated record is stored (a rerun on long-lived services
    // counts only its own: the group resumes from its committed offsets).
    let stored = || {
        let body = metrics_text(&http);
        body.lines()
            .find_map(|l| l.strip_prefix("fraudflight_records_stored_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    support::stack::wait_until(Duration::from_secs(180), "the README's 20,000 records stored", || async {
        stored() >= 20_000.0
    })
    .await;
    assert_eq!(stored(), 20_000.0, "exactly the simulated records");

    // Ctrl-C / SIGTERM drains, commits, exits (the README's comment).
    let serve = child_running(shell.id(), " serve").expect("serve runs under the README's shell");
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
