//! A minimal SOCKS5 proxy for tests: no authentication, CONNECT only; every target (IP or
//! domain name) is dialled at one fixed loopback address. Records the requested targets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Socks5 {
    pub addr: SocketAddr,
    /// `host:port` of every CONNECT request, in order.
    pub targets: Arc<Mutex<Vec<String>>>,
}

pub async fn start_socks5(upstream: SocketAddr) -> Socks5 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let targets = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&targets);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                if let Err(e) = relay(stream, upstream, seen).await {
                    eprintln!("socks5 test proxy: {e}");
                }
            });
        }
    });
    Socks5 { addr, targets }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    assert_eq!(head[0], 5, "SOCKS version");
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    assert!(methods.contains(&0), "client offers no-auth");
    client.write_all(&[5, 0]).await?;
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    assert_eq!(request[1], 1, "CONNECT");
    let host = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let len = client.read_u8().await?;
            let mut name = vec![0u8; usize::from(len)];
            client.read_exact(&mut name).await?;
            String::from_utf8(name).expect("domain is utf8")
        }
        other => panic!("unexpected address type {other}"),
    };
    let port = client.read_u16().await?;
    seen.lock().expect("lock").push(format!("{host}:{port}"));
    let mut server = TcpStream::connect(upstream).await?;
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
