//! `wabot serve` as a user runs it: the real binary, a database it creates itself,
//! health endpoints, and a clean exit on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::server_url;

pub fn wabot() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wabot"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WABOT_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A URL for a database that does not exist yet (`wabot` creates it), dropped
/// when the test passes.
pub fn new_database_url() -> String {
    let base = url::Url::parse(&server_url()).unwrap();
    let mut url = base.clone();
    let name = crate::helpers::scratch_database_name("wabot_serve");
    url.set_path(&name);
    crate::helpers::drop_when_the_test_passes(&name);
    url.to_string()
}

/// Reads the JSON log lines until the "listening" one; returns the bound address.
pub async fn wait_until_listening(child: &mut Child) -> String {
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "listening" {
                return v["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("wabot exited before listening");
    })
    .await
    .expect("wabot listens within a minute");
    // Keep draining the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found
}

#[tokio::test]
async fn serve_creates_the_database_answers_health_checks_and_exits_0_on_sigterm() {
    let mut child = wabot()
        .arg("serve")
        .env("DATABASE_URL", new_database_url())
        .env("WABOT_LISTEN", "127.0.0.1:0")
        .spawn()
        .unwrap();
    let addr = wait_until_listening(&mut child).await;

    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(
        ready.headers().contains_key("x-request-id"),
        "every response carries a request id"
    );

    let pid = child.id().unwrap();
    let stopping = std::time::Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("wabot stops within the drain time")
        .unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    // Idle, it has nothing to drain: it stops at once, not after the 20 s drain time.
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(3), "an idle stop took {took:?}");
}

#[tokio::test]
async fn a_bad_configuration_value_exits_non_zero_naming_the_key() {
    for (key, value) in [
        ("WABOT_LISTEN", "not-an-address"),
        ("WABOT_GRAPH_API_BASE", "ftp://example.com"),
        ("WABOT_GRAPH_API_VERSION", "latest"),
        ("DATABASE_URL", "mysql://localhost/x"),
        ("WABOT_SEND_RATE", "0"),
    ] {
        let output = wabot().arg("serve").env(key, value).output().await.unwrap();
        assert!(!output.status.success(), "{key}={value} must fail start-up");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(key),
            "{key}: stderr names the key: {stderr}"
        );
    }
}

#[tokio::test]
async fn migrate_commands_run_report_and_revert() {
    let url = new_database_url();
    let run = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let out = wabot()
                .args(args)
                .env("DATABASE_URL", url)
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "wabot {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };
    run(&["migrate", "run"]).await;
    let status = run(&["migrate", "status"]).await;
    assert!(status.lines().count() >= 1 && status.lines().all(|l| l.starts_with("applied")));
    let reverted = run(&["migrate", "revert"]).await;
    assert!(reverted.starts_with("reverted: "), "{reverted}");
    let status = run(&["migrate", "status"]).await;
    assert!(status.lines().any(|l| l.starts_with("pending")), "{status}");

    let version = run(&["--version"]).await;
    assert!(version.contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn the_systemd_unit_passes_systemd_analyze_verify() {
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed; .ci/run installs it");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/wabot.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("EnvironmentFile=/etc/wabot/wabot.env"));
    // Verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wabot.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/wabot", env!("CARGO_BIN_EXE_wabot")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(!stderr.contains("wabot.service"), "no complaints: {stderr}");
}
