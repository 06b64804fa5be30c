//! The binary's contract with scripts: flag names and checks, the startup line, clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_quern-fake-embedder");

#[test]
fn out_of_range_flags_are_refused_by_name() {
    for (flag, value) in [
        ("--error-rate", "1.5"),
        ("--throttle-rate", "-0.1"),
        ("--throttle-rate", "lots"),
        ("--dim", "0"),
        ("--max-batch", "0"),
    ] {
        let output = Command::new(BIN).args([flag, value]).output().unwrap();
        assert!(!output.status.success(), "{flag} {value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

#[test]
fn help_states_every_default() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--port <PORT>",
        "[default: 8089]",
        "--host <HOST>",
        "[default: 127.0.0.1]",
        "--dim <DIM>",
        "[default: 384]",
        "--latency-ms <LATENCY_MS>",
        "--jitter-ms <JITTER_MS>",
        "--error-rate <ERROR_RATE>",
        "--throttle-rate <THROTTLE_RATE>",
        "--max-batch <MAX_BATCH>",
        "[default: 2048]",
        "--max-concurrency <MAX_CONCURRENCY>",
        "--max-request-chars <MAX_REQUEST_CHARS>",
        "--reject-marker <REJECT_MARKER>",
        "--serial",
        "--refuse-base64",
        "--unauthorized-for-secs <UNAUTHORIZED_FOR_SECS>",
    ] {
        assert!(help.contains(expected), "missing {expected:?} in:\n{help}");
    }
    // Every option shows a default but help, version, --reject-marker (off unless given) and the switches.
    assert_eq!(help.matches("[default: ").count(), 11, "{help}");
}

#[tokio::test]
async fn announces_its_address_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--dim", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line
        .strip_prefix("quern-fake-embedder listening on ")
        .and_then(|rest| rest.strip_suffix(" (dim 8)\n"))
        .unwrap_or_else(|| panic!("unexpected startup line {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let health = reqwest::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
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
