//! A minimal HTTP/1.1 GET for readiness checks (`/ready`, `/healthz/ready`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::BenchError;
use crate::fleet::Fleet;

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
pub fn parse_status_line(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

/// `GET path` with `Connection: close`; the status code, or why there is none.
pub async fn get_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = vec![0u8; 512];
        let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&head[..n]).into_owned();
        parse_status_line(&text).ok_or_else(|| format!("not an HTTP response: {text:?}"))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}

/// Polls until `GET path` answers 200, failing early if a fleet process exits.
pub async fn wait_ready(
    what: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    fleet: &mut Fleet,
) -> Result<(), BenchError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last;
    loop {
        fleet.check_alive()?;
        last = match get_status(addr, path).await {
            Ok(200) => return Ok(()),
            Ok(status) => format!("status {status}"),
            Err(error) => error,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(BenchError::NotReady {
                what: what.to_owned(),
                addr,
                seconds: timeout.as_secs(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(""), None);
    }
}
