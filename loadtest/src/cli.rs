//! Command line: `loadtest server ...` and `loadtest load ... URL`, accepting fortio's
//! single-dash long flags (`-qps 100`, `-http-port 8080`) as well as `--qps 100`.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "fortio-compatible echo server and load generator"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the echo server.
    Server(ServerArgs),
    /// Generate load against a URL and report fortio's text summary (and JSON).
    Load(Box<crate::load::LoadArgs>),
    /// Send one request with the load client's settings and print the response.
    Curl(Box<crate::load::LoadArgs>),
    /// Side-by-side benchmark: direct, the mesh and Envoy on loopback, with a report.
    Bench(Box<mesh_bench::BenchArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Listen address: `port`, `:port` or `ip:port`.
    #[arg(long = "http-port", default_value = "8080")]
    pub http_port: String,
    /// Name reported in `/debug` and in the `x-echo-server` header.
    #[arg(long, default_value = "echo")]
    pub name: String,
    /// Close an HTTP/1.1 connection this long after its last response when no new request
    /// has begun, without `Connection: close` (an app whose keep-alive timeout races its
    /// clients; e.g. `5ms`). Not a fortio flag. Default: 30s.
    #[arg(long = "keepalive-timeout", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Option<std::time::Duration>,
}

/// Problems with command-line values.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid listen address {value:?} for -{flag}: expected port, :port or ip:port")]
    ListenAddress { flag: &'static str, value: String },
}

/// Rewrites fortio's single-dash long flags to clap's double dash: an argument made of one
/// `-`, an ASCII letter and at least one more character becomes `--...` (so `-qps` becomes
/// `--qps`, while `-c`, `-1` and `-0.5` are untouched). Nothing after a bare `--` changes.
pub fn normalize_args<I>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = OsString>,
{
    let mut passthrough = false;
    args.into_iter()
        .enumerate()
        .map(|(index, arg)| {
            if index == 0 || passthrough {
                return arg;
            }
            let Some(text) = arg.to_str() else {
                return arg;
            };
            if text == "--" {
                passthrough = true;
                return arg;
            }
            let mut chars = text.chars();
            let is_long = chars.next() == Some('-')
                && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.next().is_some();
            if is_long {
                OsString::from(format!("-{text}"))
            } else {
                arg
            }
        })
        .collect()
}

/// Parses fortio's `-http-port` forms: `8080`, `:8080`, `127.0.0.1:8080`, `[::1]:8080`.
/// A bare port listens on all IPv4 addresses.
pub fn parse_listen_address(value: &str) -> Result<SocketAddr, CliError> {
    let error = || CliError::ListenAddress {
        flag: "http-port",
        value: value.to_owned(),
    };
    let port_only = value.strip_prefix(':').unwrap_or(value);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    value.parse().map_err(|_| error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        normalize_args(list.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().expect("utf8"))
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            args(&[
                "loadtest",
                "load",
                "-qps",
                "-1",
                "-c",
                "4",
                "-keepalive=false",
                "u"
            ]),
            [
                "loadtest",
                "load",
                "--qps",
                "-1",
                "-c",
                "4",
                "--keepalive=false",
                "u"
            ]
        );
        assert_eq!(
            args(&["lt", "server", "-http-port", "8080", "--name", "x"]),
            ["lt", "server", "--http-port", "8080", "--name", "x"]
        );
        assert_eq!(
            args(&["lt", "-h2", "-H", "a: b"]),
            ["lt", "--h2", "-H", "a: b"]
        );
        assert_eq!(
            args(&["lt", "-r", "-0.5", "--", "-qps"]),
            ["lt", "-r", "-0.5", "--", "-qps"]
        );
    }

    #[test]
    fn listen_address_forms() {
        let any = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        assert_eq!(parse_listen_address("8080").expect("port"), any(8080));
        assert_eq!(parse_listen_address(":9090").expect("port"), any(9090));
        assert_eq!(
            parse_listen_address("127.0.0.2:80").expect("addr"),
            "127.0.0.2:80".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            parse_listen_address("[::1]:80").expect("addr"),
            "[::1]:80".parse::<SocketAddr>().expect("addr")
        );
        assert!(parse_listen_address("nope").is_err());
        assert!(parse_listen_address("70000").is_err());
    }

    #[test]
    fn server_command_parses() {
        let cli = Cli::try_parse_from(normalize_args(
            [
                "loadtest",
                "server",
                "-http-port",
                "127.0.0.1:0",
                "-name",
                "e1",
            ]
            .map(OsString::from),
        ))
        .expect("parse");
        let Command::Server(server) = cli.command else {
            panic!("expected server");
        };
        assert_eq!(server.http_port, "127.0.0.1:0");
        assert_eq!(server.name, "e1");
    }
}
