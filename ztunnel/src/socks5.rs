//! The SOCKS5 (RFC 1928) entry of the loopback mesh: no authentication, CONNECT only, with IPv4,
//! IPv6 or domain-name targets. Parsing is pure; `handshake` does the I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;

/// Where the client asked to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    Host(String, u16),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// SOCKS5 reply codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0,
    GeneralFailure = 1,
    NotAllowed = 2,
    NetworkUnreachable = 3,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

#[derive(Debug, thiserror::Error)]
pub enum Socks5Error {
    #[error("SOCKS version {0} is not 5")]
    Version(u8),
    #[error("client offers no 'no authentication' method")]
    NoAcceptableMethod,
    #[error("command {0} is not CONNECT")]
    Command(u8),
    #[error("address type {0} is not supported")]
    AddressType(u8),
    #[error("domain name is not UTF-8")]
    BadDomain,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Socks5Error {
    /// The reply to send before closing, if the protocol got that far.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Socks5Error::Command(_) => Some(Reply::CommandNotSupported),
            Socks5Error::AddressType(_) => Some(Reply::AddressTypeNotSupported),
            Socks5Error::BadDomain => Some(Reply::GeneralFailure),
            _ => None,
        }
    }
}

/// Encodes a reply (bound address reported as 0.0.0.0:0, as most proxies do).
pub fn encode_reply(reply: Reply) -> [u8; 10] {
    [VERSION, reply as u8, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// Reads the greeting and the CONNECT request; answers the method selection.
/// The caller sends the final reply with [`encode_reply`] once it knows the outcome.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<Target, Socks5Error> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(Socks5Error::Version(head[0]));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    stream.read_exact(&mut methods).await?;
    if !methods.contains(&NO_AUTH) {
        stream.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await?;
        return Err(Socks5Error::NoAcceptableMethod);
    }
    stream.write_all(&[VERSION, NO_AUTH]).await?;

    let mut request = [0u8; 4];
    stream.read_exact(&mut request).await?;
    if request[0] != VERSION {
        return Err(Socks5Error::Version(request[0]));
    }
    let result = read_target(stream, request[1], request[3]).await;
    if let Err(e) = &result
        && let Some(reply) = e.reply()
    {
        stream.write_all(&encode_reply(reply)).await?;
    }
    result
}

async fn read_target<S: AsyncRead + Unpin>(
    stream: &mut S,
    command: u8,
    atyp: u8,
) -> Result<Target, Socks5Error> {
    let host = match atyp {
        1 => {
            let mut ip = [0u8; 4];
            stream.read_exact(&mut ip).await?;
            Ok(IpAddr::V4(Ipv4Addr::from(ip)))
        }
        4 => {
            let mut ip = [0u8; 16];
            stream.read_exact(&mut ip).await?;
            Ok(IpAddr::V6(Ipv6Addr::from(ip)))
        }
        3 => {
            let len = stream.read_u8().await?;
            let mut name = vec![0u8; usize::from(len)];
            stream.read_exact(&mut name).await?;
            Err(String::from_utf8(name).map_err(|_| Socks5Error::BadDomain)?)
        }
        other => return Err(Socks5Error::AddressType(other)),
    };
    let port = stream.read_u16().await?;
    if command != CONNECT {
        return Err(Socks5Error::Command(command));
    }
    Ok(match host {
        Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
        // A domain that is an IP literal is an address.
        Err(name) => match name.parse::<IpAddr>() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
            Err(_) => Target::Host(name, port),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(input: &[u8]) -> (Result<Target, Socks5Error>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(input).await.expect("write");
        let result = handshake(&mut server).await;
        drop(server);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read");
        (result, out)
    }

    #[tokio::test]
    async fn domain_connect() {
        let mut input = vec![5, 1, 0, 5, 1, 0, 3, 7];
        input.extend_from_slice(b"reviews");
        input.extend_from_slice(&9080u16.to_be_bytes());
        let (target, out) = run(&input).await;
        assert_eq!(
            target.expect("target"),
            Target::Host("reviews".into(), 9080)
        );
        assert_eq!(out, vec![5, 0]);
    }

    #[tokio::test]
    async fn ipv4_connect_and_ip_literal_domain() {
        let (target, _) = run(&[5, 1, 0, 5, 1, 0, 1, 127, 0, 100, 12, 0x23, 0x78]).await;
        assert_eq!(
            target.expect("target"),
            Target::Addr("127.0.100.12:9080".parse().expect("addr"))
        );
        let mut input = vec![5, 1, 0, 5, 1, 0, 3, 9];
        input.extend_from_slice(b"127.0.0.1");
        input.extend_from_slice(&80u16.to_be_bytes());
        let (target, _) = run(&input).await;
        assert_eq!(
            target.expect("target"),
            Target::Addr("127.0.0.1:80".parse().expect("addr"))
        );
    }

    #[tokio::test]
    async fn refuses_auth_only_clients_and_bind() {
        let (result, out) = run(&[5, 1, 2]).await;
        assert!(matches!(result, Err(Socks5Error::NoAcceptableMethod)));
        assert_eq!(out, vec![5, 0xff]);
        let (result, out) = run(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80]).await;
        assert!(matches!(result, Err(Socks5Error::Command(2))));
        assert_eq!(&out[2..4], &[5, Reply::CommandNotSupported as u8]);
        let (result, _) = run(&[4, 1, 0]).await;
        assert!(matches!(result, Err(Socks5Error::Version(4))));
    }
}
