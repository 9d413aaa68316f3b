//! The `loadtest` binary end to end: fortio-style flags, JSON on stdout, text on stderr.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{h1_get, start_echo};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loadtest");

#[tokio::test]
async fn load_writes_fortio_json_to_stdout() {
    let echo = start_echo("bin").await;
    let url = format!("http://{}/echo?size=256", echo.addr);
    let output = tokio::process::Command::new(BIN)
        .args([
            "load", "-qps", "-1", "-n", "50", "-c", "2", "-json", "-", "-labels", "bin run", &url,
        ])
        .output()
        .await
        .expect("run loadtest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&output.stdout).expect("stdout is only the JSON");
    assert_eq!(v["DurationHistogram"]["Count"], 50);
    assert_eq!(v["RetCodes"]["200"], 50);
    assert_eq!(v["Labels"], "bin run");
    assert_eq!(v["RequestedQPS"], "max");
    assert!(
        stderr.contains("All done 50 calls (plus 0 warmup)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bad_flags_fail_with_the_flag_named() {
    let output = tokio::process::Command::new(BIN)
        .args(["load", "-t", "soon", "http://127.0.0.1:1/"])
        .output()
        .await
        .expect("run loadtest");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("-t"), "{stderr}");
}

#[tokio::test]
async fn server_subcommand_serves_echo() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("addr").port()
    };
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "server",
            "-http-port",
            &format!("127.0.0.1:{port}"),
            "-name",
            "from-bin",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn server");
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "server listening");
    let reply = h1_get(addr, "/?size=7").await;
    assert_eq!(reply.body.len(), 7);
    assert_eq!(reply.headers["x-echo-server"], "from-bin");
    child.kill().await.expect("stop the server we started");
}
