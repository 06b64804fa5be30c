//! The binary's contract with scripts: a one-line error naming the fetch script when the model is missing, the flag
//! defaults, the startup line and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_quern-embedder");

#[test]
fn a_missing_model_is_one_line_saying_what_to_run() {
    let empty = std::env::temp_dir().join(format!("quern-embedder-cli-no-model-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    for args in [vec!["--port", "0"], vec!["--port", "0", "--model-dir", empty.to_str().unwrap()]] {
        let output =
            Command::new(BIN).args(&args).env("QUERN_MODEL_DIR", &empty).env("RUST_LOG", "off").output().unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("run `bash scripts/fetch-model.sh`"), "{stderr}");
        assert!(stderr.contains(empty.to_str().unwrap()), "names the directory: {stderr}");
    }
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn help_states_the_defaults() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--port <PORT>",
        "[default: 8090]",
        "--model-dir <MODEL_DIR>",
        "[env: QUERN_MODEL_DIR=",
        "scripts/fetch-model.sh",
        "--model-id <MODEL_ID>",
        "[default: all-MiniLM-L6-v2]",
        "--workers <WORKERS>",
        "--threads-per-pass <THREADS_PER_PASS>",
        "--max-batch <MAX_BATCH>",
        "[default: 64]",
        "--max-queued-inputs <MAX_QUEUED_INPUTS>",
        "[default: 128]",
        "--tokens-per-batch <TOKENS_PER_BATCH>",
        "[default: 1024]",
    ] {
        assert!(help.contains(expected), "missing {expected:?} in:\n{help}");
    }
}

#[tokio::test]
async fn announces_its_address_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--workers", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line
        .strip_prefix("quern-embedder listening on ")
        .and_then(|rest| rest.strip_suffix(" (model all-MiniLM-L6-v2, dim 384, 1 workers)\n"))
        .unwrap_or_else(|| {
            panic!("unexpected startup line {line:?} (is the model fetched? bash scripts/fetch-model.sh)")
        })
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let body = serde_json::json!({"model": "all-MiniLM-L6-v2", "input": "hello"});
    let answer = reqwest::Client::new().post(format!("{url}/v1/embeddings")).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 200);

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("server did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
}
