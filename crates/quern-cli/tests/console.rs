//! `quern console`'s guard, from outside the process: the refusals at start, and a console on a non-loopback
//! address that shows nothing before its token is given. The pages themselves are tested in a real browser
//! (tests/console, run by scripts/test-console.sh).

use std::process::Stdio;
use std::time::Duration;

use quern_testkit::{TestDatabase, TestQueues};
use tokio::io::{AsyncBufReadExt, BufReader};

const TOKEN: &str = "console-test-token-0123";

fn console(queues: &TestQueues, database_url: &str, listen: &str, token: Option<&str>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_quern"));
    command
        .args(["console", "--listen", listen])
        .env("QUERN_AMQP_URL", quern_testkit::amqp_url())
        .env("QUERN_QUEUE_PREFIX", queues.topology.prefix())
        .env("QUERN_DATABASE_URL", database_url)
        .env_remove("QUERN_CONSOLE_TOKEN")
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("QUERN_CONSOLE_TOKEN", token);
    }
    command
}

#[tokio::test]
async fn a_public_address_needs_a_token_long_enough() {
    let queues = TestQueues::new("console_refuse");
    for (token, expected) in [(None, "QUERN_CONSOLE_TOKEN"), (Some("short"), "at least 16")] {
        let output = console(&queues, "postgres://postgres@127.0.0.1:1/none", "0.0.0.0:0", token)
            .output()
            .await
            .expect("run quern console");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(output.stdout.is_empty(), "nothing served: {}", String::from_utf8_lossy(&output.stdout));
    }
    let output = console(&queues, "postgres://postgres@127.0.0.1:1/none", "localhost:80", None)
        .output()
        .await
        .expect("run quern console");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--listen"), "a bad address names the flag: {stderr}");
}

/// The value of cookie `name` among a response's `Set-Cookie` headers.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next()?.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

#[tokio::test]
async fn on_a_public_address_every_page_waits_for_the_token() {
    let queues = TestQueues::new("console_public");
    // Migrated: the overview reads the jobs and segments tables.
    let db = TestDatabase::create(quern_testkit::TEST_DIM).await;
    // Every address of the machine: not loopback, though the test reaches it through 127.0.0.1.
    let mut child = console(&queues, &db.url, "0.0.0.0:0", Some(TOKEN))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start quern console");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the console starts")
        .expect("read stdout")
        .expect("a line");
    let port = line.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok()).expect(&line);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

    let first = http.get(format!("{base}/")).send().await.expect("GET /");
    assert_eq!(first.status(), 303, "the overview is not shown before the token");
    assert_eq!(first.headers()["location"], "/login");
    for path in ["/jobs?collection=x", "/dead-letters"] {
        assert_eq!(http.get(format!("{base}{path}")).send().await.expect("GET").status(), 303, "{path}");
    }
    let login = http.get(format!("{base}/login")).send().await.expect("GET /login");
    assert_eq!(login.status(), 200);
    let csrf = set_cookie(&login, "quern_csrf").expect("a CSRF cookie");
    let sign_in = |token: &'static str, form_csrf: String| {
        http.post(format!("{base}/login"))
            .header("cookie", format!("quern_csrf={csrf}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={form_csrf}&token={token}"))
            .send()
    };

    let wrong_token = sign_in("console-test-token-0124", csrf.clone()).await.expect("POST /login");
    assert_eq!(wrong_token.status(), 403);
    assert!(set_cookie(&wrong_token, "quern_session").is_none());
    let forged = sign_in(TOKEN, "0".repeat(32)).await.expect("POST /login");
    assert_eq!(forged.status(), 403, "a form without this browser's CSRF token is refused, right token or not");
    assert!(forged.text().await.expect("body").contains("CSRF"));

    let signed_in = sign_in(TOKEN, csrf.clone()).await.expect("POST /login");
    assert_eq!(signed_in.status(), 303);
    let session = set_cookie(&signed_in, "quern_session").expect("a session cookie");
    let overview = http
        .get(format!("{base}/"))
        .header("cookie", format!("quern_csrf={csrf}; quern_session={session}"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(overview.status(), 200);
    let csp = overview.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "{csp}");
    let page = overview.text().await.expect("body");
    assert!(page.contains(&format!("{}.ingest", queues.topology.prefix())), "{page}");
    child.kill().await.expect("stop the console");
}
