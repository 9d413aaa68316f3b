//! Shared helpers of the end-to-end suites: a local mesh from `examples/demo.yaml` moved to its
//! own loopback block (so tests run in parallel without address clashes), and a metrics scraper.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use mesh::local::LocalMesh;

pub mod raw;
pub mod steady;

pub const DEMO_YAML: &str = include_str!("../../examples/demo.yaml");

/// `examples/demo.yaml` with every `127.0.x.y` address moved to `127.<block>.x.y`.
pub fn demo_yaml_in_block(block: u8) -> String {
    DEMO_YAML.replace("127.0.", &format!("127.{block}."))
}

/// A running mesh whose manifests live in a temporary directory the test may edit.
pub struct TestMesh {
    pub mesh: LocalMesh,
    pub block: u8,
    pub manifest: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestMesh {
    pub async fn start(block: u8) -> anyhow::Result<Self> {
        Self::start_with(block, &demo_yaml_in_block(block)).await
    }

    pub async fn start_with(block: u8, yaml: &str) -> anyhow::Result<Self> {
        Self::start_tuned(block, yaml, mesh::local::Tuning::default()).await
    }

    /// As [`TestMesh::start_with`], with the proxies' timeouts from `tuning`.
    pub async fn start_tuned(
        block: u8,
        yaml: &str,
        tuning: mesh::local::Tuning,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let manifest = dir.path().join("mesh.yaml");
        std::fs::write(&manifest, yaml)?;
        let mesh = LocalMesh::start_from_path_with(&manifest, tuning).await?;
        mesh.wait_ready(Duration::from_secs(10)).await?;
        Ok(TestMesh {
            mesh,
            block,
            manifest,
            _dir: dir,
        })
    }

    /// `127.<block>.<rest>` parsed with `port`.
    pub fn addr(&self, rest: &str, port: u16) -> SocketAddr {
        format!("127.{}.{rest}:{port}", self.block)
            .parse()
            .expect("valid test address")
    }

    /// The SOCKS5 entry of the pod at `127.<block>.<rest>`.
    pub fn socks(&self, rest: &str) -> SocketAddr {
        self.addr(rest, 15080)
    }

    /// Rewrites the manifest (atomically, by rename) and waits for the store to take it.
    pub async fn edit(&self, yaml: &str) -> anyhow::Result<u64> {
        let before = self.mesh.store.load().version();
        let tmp = self.manifest.with_extension("tmp");
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, &self.manifest)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.mesh.store.load().version();
            if now > before {
                return Ok(now);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the edit was not picked up in 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes `yaml` as the manifest, waits for the store to reject it (5 s at most), checks
    /// that the last good config still serves, and returns what the rejection said.
    pub async fn edit_rejected(&self, yaml: &str) -> anyhow::Result<String> {
        let store = &self.mesh.store;
        let (before, version) = (store.rejections(), store.load().version());
        std::fs::write(&self.manifest, yaml)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.rejections() == before {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the edit was not rejected in 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::ensure!(
            store.load().version() == version,
            "the rejected edit was applied"
        );
        Ok(store.last_rejection().unwrap_or_default())
    }

    pub async fn stop(self) {
        self.mesh.stop().await;
    }
}

/// Sums the samples of `name` whose labels include all of `labels`, scraped from `admin`.
pub async fn scrape_sum(
    admin: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
) -> anyhow::Result<f64> {
    let text = http_get(admin, "/metrics").await?;
    Ok(sum_samples(&text, name, labels))
}

/// Scrapes until the sum equals `expected` (metrics are recorded after the response is
/// sent, so a scrape right after a response can be early); returns the last value seen.
pub async fn scrape_until(
    admin: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    expected: f64,
) -> anyhow::Result<f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let value = scrape_sum(admin, name, labels).await?;
        if value == expected || tokio::time::Instant::now() > deadline {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pure part of [`scrape_sum`]: sums matching samples in Prometheus text format.
pub fn sum_samples(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A plain GET (no mesh) returning the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_samples_only() {
        let text = "# HELP x\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"1\",b=\"9\"} 4\nx_total_other{a=\"1\"} 100\nx_total 5\n";
        assert_eq!(sum_samples(text, "x_total", &[("a", "1")]), 7.0);
        assert_eq!(sum_samples(text, "x_total", &[("b", "9")]), 4.0);
        assert_eq!(sum_samples(text, "x_total", &[]), 12.0);
    }

    #[test]
    fn block_rewrite_moves_every_address() {
        let yaml = demo_yaml_in_block(42);
        assert!(!yaml.contains("127.0."), "an address stayed in block 0");
        assert!(yaml.contains("127.42."));
    }
}
