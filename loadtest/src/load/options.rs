//! `loadtest load` flags (fortio's names and defaults) and their validation into
//! [`LoadOptions`] (pure).

use std::time::Duration;

use bytes::Bytes;
use clap::{ArgAction, Args};
use http::{HeaderName, HeaderValue, Uri};

use super::LoadError;
use crate::godur;

/// fortio `load` flags. Single-dash long forms (`-qps`) are accepted via
/// [`crate::cli::normalize_args`]; booleans also take Go's `-flag=false`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Number of connections/goroutines ("threads").
    #[arg(short = 'c', default_value_t = 4)]
    pub connections: usize,
    /// Total queries per second across connections; 0 or negative: as fast as possible.
    #[arg(long, default_value_t = 8.0, allow_negative_numbers = true)]
    pub qps: f64,
    /// How long to run (Go duration, e.g. 5s, 1m); 0: until -n calls or interrupted.
    #[arg(short = 't', default_value = "5s")]
    pub duration: String,
    /// Run exactly this many calls instead of for a duration (0: use -t).
    #[arg(short = 'n', default_value_t = 0)]
    pub exactly: u64,
    /// Spread the connections' start times evenly over the first interval.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub uniform: bool,
    /// Move each send time by a random ±10 % of the interval.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub jitter: bool,
    /// When behind schedule, do not burst to catch up.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub nocatchup: bool,
    /// Keep connections alive between requests.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub keepalive: bool,
    /// Extra request header "Name: value" (repeatable; Host overrides the authority).
    #[arg(short = 'H')]
    pub headers: Vec<String>,
    /// POST a body of this many bytes.
    #[arg(long = "payload-size", default_value_t = 0)]
    pub payload_size: usize,
    /// POST this string as the body.
    #[arg(long, default_value = "")]
    pub payload: String,
    /// Labels for the results (default: URL host/path and this host's name).
    #[arg(long, default_value = "")]
    pub labels: String,
    /// Percentiles to report, comma separated.
    #[arg(short = 'p', default_value = "50,75,90,99,99.9")]
    pub percentiles: String,
    /// Latency histogram resolution in seconds.
    #[arg(short = 'r', default_value_t = 0.001)]
    pub resolution: f64,
    /// Use HTTP/2 (prior knowledge for http://).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub h2: bool,
    /// Use hyper's HTTP/1.1 client instead of the fast one (fortio's `-stdclient`).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub stdclient: bool,
    /// Write fortio's JSON result to this file ("-" for stdout).
    #[arg(long)]
    pub json: Option<String>,
    /// Enter through this SOCKS5 proxy (host:port); the proxy resolves the target host.
    #[arg(long)]
    pub socks5: Option<String>,
    /// Per-request timeout (Go duration).
    #[arg(long, default_value = "3s")]
    pub timeout: String,
    /// Do not abort when warmup requests fail.
    #[arg(long = "allow-initial-errors", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_initial_errors: bool,
    /// Target URL (http://host[:port]/path?query).
    pub url: String,
}

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written in the URL (the Host header / :authority).
    pub authority: String,
    pub path_and_query: String,
}

/// Extra request headers, in order.
pub type HeaderList = Vec<(HeaderName, HeaderValue)>;

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub target: Target,
    pub connections: usize,
    pub qps: f64,
    pub duration: Option<Duration>,
    pub exactly: u64,
    pub uniform: bool,
    pub jitter: bool,
    pub nocatchup: bool,
    pub keepalive: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub host_override: Option<String>,
    pub payload: Option<Bytes>,
    pub labels: String,
    pub percentiles: Vec<f64>,
    pub resolution: f64,
    pub h2: bool,
    /// hyper's HTTP/1.1 client instead of the fast one.
    pub std_client: bool,
    pub socks5: Option<String>,
    pub timeout: Duration,
    pub allow_initial_errors: bool,
}

impl LoadArgs {
    /// Validates every flag; `hostname` feeds the default labels.
    pub fn into_options(self, hostname: &str) -> Result<LoadOptions, LoadError> {
        let target = parse_target(&self.url)?;
        let duration = godur::parse(&self.duration).map_err(|e| invalid("t", &self.duration, e))?;
        let timeout =
            godur::parse(&self.timeout).map_err(|e| invalid("timeout", &self.timeout, e))?;
        if self.connections == 0 {
            return Err(invalid("c", "0", "need at least one connection"));
        }
        if self.resolution.is_nan() || self.resolution <= 0.0 {
            return Err(invalid("r", &self.resolution.to_string(), "must be > 0"));
        }
        let (headers, host_override) = parse_headers(&self.headers)?;
        let labels = if self.labels.is_empty() {
            default_labels(&target.url, hostname)
        } else {
            self.labels
        };
        Ok(LoadOptions {
            connections: self.connections,
            qps: if self.qps > 0.0 { self.qps } else { -1.0 },
            duration: (!duration.is_zero()).then_some(duration),
            exactly: self.exactly,
            uniform: self.uniform,
            jitter: self.jitter,
            nocatchup: self.nocatchup,
            keepalive: self.keepalive,
            headers,
            host_override,
            payload: payload(self.payload_size, &self.payload),
            labels,
            percentiles: parse_percentiles(&self.percentiles)?,
            resolution: self.resolution,
            h2: self.h2,
            std_client: self.stdclient,
            socks5: self.socks5,
            timeout,
            allow_initial_errors: self.allow_initial_errors,
            target,
        })
    }
}

fn invalid(flag: &'static str, value: &str, reason: impl ToString) -> LoadError {
    LoadError::InvalidFlag {
        flag,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

/// Parses an `http://` URL (https is not supported: no TLS client here).
pub fn parse_target(url: &str) -> Result<Target, LoadError> {
    let error = |reason: &str| LoadError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let uri: Uri = with_scheme.parse().map_err(|_| error("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(error("https is not supported; use http:// (h2c with -h2)")),
        _ => return Err(error("only http:// URLs are supported")),
    }
    let authority = uri.authority().ok_or_else(|| error("missing host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(error("missing host"));
    }
    Ok(Target {
        url: with_scheme.clone(),
        host: host.to_owned(),
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str().to_owned(),
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    })
}

/// `-H "Name: value"` list; a Host header becomes the authority override.
fn parse_headers(raw: &[String]) -> Result<(HeaderList, Option<String>), LoadError> {
    let mut headers = Vec::new();
    let mut host = None;
    for entry in raw {
        let (name, value) = entry
            .split_once(':')
            .ok_or_else(|| invalid("H", entry, "expected \"Name: value\""))?;
        let value = value.trim();
        let name =
            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| invalid("H", entry, e))?;
        if name == http::header::HOST {
            host = Some(value.to_owned());
            continue;
        }
        let value = HeaderValue::from_str(value).map_err(|e| invalid("H", entry, e))?;
        headers.push((name, value));
    }
    Ok((headers, host))
}

/// fortio's `ParsePercentiles`: comma separated, each in (0, 100).
pub fn parse_percentiles(raw: &str) -> Result<Vec<f64>, LoadError> {
    let mut list = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let p: f64 = item.parse().map_err(|e| invalid("p", raw, e))?;
        if !(p > 0.0 && p < 100.0) {
            return Err(invalid(
                "p",
                raw,
                format!("percentile {p} must be > 0 and < 100"),
            ));
        }
        list.push(p);
    }
    if list.is_empty() {
        return Err(invalid("p", raw, "list can't be empty"));
    }
    Ok(list)
}

fn payload(size: usize, text: &str) -> Option<Bytes> {
    if !text.is_empty() {
        return Some(Bytes::copy_from_slice(text.as_bytes()));
    }
    (size > 0).then(|| Bytes::from((0..size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<_>>()))
}

/// fortio's default labels: the URL without its scheme, " , ", and the short host name.
pub fn default_labels(url: &str, hostname: &str) -> String {
    let short_url = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let short_host = hostname.split('.').next().unwrap_or(hostname);
    format!("{short_url} , {short_host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, normalize_args};
    use clap::Parser;

    fn load_args(list: &[&str]) -> LoadArgs {
        let mut argv = vec!["loadtest", "load"];
        argv.extend_from_slice(list);
        let cli =
            Cli::try_parse_from(normalize_args(argv.into_iter().map(Into::into))).expect("parse");
        match cli.command {
            Command::Load(args) => *args,
            other => panic!("expected load, got {other:?}"),
        }
    }

    #[test]
    fn fortio_defaults() {
        let o = load_args(&["http://127.0.0.1:8080/echo"])
            .into_options("host.example.com")
            .expect("valid");
        assert_eq!(o.connections, 4);
        assert_eq!(o.qps, 8.0);
        assert_eq!(o.duration, Some(Duration::from_secs(5)));
        assert_eq!(o.exactly, 0);
        assert!(o.keepalive && !o.uniform && !o.jitter && !o.nocatchup && !o.h2);
        assert!(!o.std_client, "the fast client is the default");
        assert_eq!(o.percentiles, [50.0, 75.0, 90.0, 99.0, 99.9]);
        assert_eq!(o.resolution, 0.001);
        assert_eq!(o.timeout, Duration::from_secs(3));
        assert_eq!(o.labels, "127.0.0.1:8080/echo , host");
        assert!(o.payload.is_none());
    }

    #[test]
    fn fortio_style_flags() {
        let o = load_args(&[
            "-c",
            "16",
            "-qps",
            "-1",
            "-t",
            "0",
            "-n",
            "100",
            "-uniform",
            "-jitter=true",
            "-nocatchup",
            "-keepalive=false",
            "-H",
            "X-A: 1",
            "-H",
            "Host: svc.ns",
            "-payload-size",
            "10",
            "-labels",
            "run1",
            "-p",
            "50,99",
            "-r",
            "0.0001",
            "-h2",
            "-stdclient",
            "-json",
            "-",
            "-socks5",
            "127.0.0.1:1080",
            "-timeout",
            "250ms",
            "http://svc.ns.svc.cluster.local:9080/x?size=1",
        ])
        .into_options("h")
        .expect("valid");
        assert_eq!(o.connections, 16);
        assert_eq!(o.qps, -1.0);
        assert_eq!(o.duration, None);
        assert_eq!(o.exactly, 100);
        assert!(o.uniform && o.jitter && o.nocatchup && !o.keepalive && o.h2 && o.std_client);
        assert_eq!(o.headers.len(), 1);
        assert_eq!(o.host_override.as_deref(), Some("svc.ns"));
        assert_eq!(o.payload.as_ref().map(Bytes::len), Some(10));
        assert_eq!(o.labels, "run1");
        assert_eq!(o.percentiles, [50.0, 99.0]);
        assert_eq!(o.resolution, 0.0001);
        assert_eq!(o.socks5.as_deref(), Some("127.0.0.1:1080"));
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert_eq!(o.target.host, "svc.ns.svc.cluster.local");
        assert_eq!(o.target.port, 9080);
        assert_eq!(o.target.path_and_query, "/x?size=1");
    }

    #[test]
    fn targets() {
        let t = parse_target("http://[::1]:81").expect("valid");
        assert_eq!(
            (t.host.as_str(), t.port, t.path_and_query.as_str()),
            ("::1", 81, "/")
        );
        assert_eq!(t.authority, "[::1]:81");
        let t = parse_target("localhost/echo").expect("scheme defaults to http");
        assert_eq!((t.host.as_str(), t.port), ("localhost", 80));
        assert!(parse_target("https://x").is_err());
        assert!(parse_target("ftp://x").is_err());
        assert!(parse_target("http://").is_err());
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let cases: [(&[&str], &str); 5] = [
            (&["-t", "soon", "http://x"], "t"),
            (&["-p", "0,50", "http://x"], "p"),
            (&["-H", "nocolon", "http://x"], "H"),
            (&["-c", "0", "http://x"], "c"),
            (&["-timeout", "soon", "http://x"], "timeout"),
        ];
        for (argv, flag) in cases {
            match load_args(argv).into_options("h") {
                Err(LoadError::InvalidFlag { flag: got, .. }) => assert_eq!(got, flag),
                other => panic!("{argv:?}: expected invalid -{flag}, got {other:?}"),
            }
        }
    }
}
