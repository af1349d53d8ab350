//! The `fraudflight` binary as a user runs it: deterministic simulator files
//! in the Kaggle layout, and clear errors (never a panic) when the ONNX
//! Runtime library or the model is missing.

use std::process::Command;

mod support;

fn fraudflight() -> Command {
    Command::new(support::fraudflight_bin())
}

#[test]
fn simulate_writes_the_same_kaggle_csv_for_the_same_seed() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let path = dir.path().join(name);
        let status =
            fraudflight().args(["simulate", "--count", "2000", "--seed", seed, "--csv"]).arg(&path).status().unwrap();
        assert!(status.success());
        std::fs::read_to_string(path).unwrap()
    };
    let (a, b, c) = (run("a.csv", "9"), run("b.csv", "9"), run("c.csv", "10"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let mut lines = a.lines();
    assert_eq!(
        lines.next().unwrap(),
        ",trans_date_trans_time,cc_num,merchant,category,amt,first,last,gender,street,city,state,zip,lat,long,\
         city_pop,job,dob,trans_num,unix_time,merch_lat,merch_long,is_fraud"
    );
    assert!(lines.next().unwrap().starts_with("0,"));
    assert_eq!(a.lines().count(), 2001);
}

#[test]
fn simulate_without_an_output_says_what_is_missing() {
    let out = fraudflight().args(["simulate", "--count", "10"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--csv FILE and/or --parquet FILE"), "{err}");
}

#[test]
fn a_missing_onnx_runtime_is_a_clear_error_not_a_panic() {
    let out = fraudflight()
        .args(["demo", "--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("FRAUDFLIGHT_ORT_DYLIB", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ONNX Runtime library /nonexistent/libonnxruntime.so is not a file"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_model_directory_without_a_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = fraudflight()
        .args(["demo", "--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--model"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.onnx"), "{err}");
}

/// `fraudflight query` drives the model switches of a running demo: a
/// shadow loaded beside the champion, promoted, rolled back; and shows live
/// quality.
#[test]
fn query_loads_a_shadow_promotes_and_rolls_back() {
    use std::io::BufRead;
    let mut demo = fraudflight()
        .args(["demo", "--rate", "0", "--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(demo.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let flight = line.split_whitespace().find_map(|w| w.strip_prefix("flight=")).expect("READY flight=").to_string();
    let query = |args: &[&str]| -> serde_json::Value {
        let out = fraudflight().args(["query", "--endpoint", &flight]).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let champion = query(&["model-info"])["version"].as_str().unwrap().to_string();
    let challenger = &format!("{}/models/handbook/gbt-handbook-history-v1", support::manifest_dir());
    let loaded = query(&["load-model", challenger, "--shadow"]);
    assert_eq!(loaded["lineup"]["champion"], champion.as_str());
    assert_eq!(loaded["lineup"]["shadow"], "gbt-handbook-history-v1");
    assert_eq!(query(&["promote"])["champion"], "gbt-handbook-history-v1");
    assert_eq!(query(&["rollback"])["champion"], champion.as_str());
    assert!(query(&["model-quality"])["days"].is_array());
    let refused = fraudflight().args(["query", "--endpoint", &flight, "promote"]).output().unwrap();
    assert!(!refused.status.success(), "nothing left to promote");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no shadow model to promote"));
    demo.kill().unwrap();
    demo.wait().unwrap();
}
