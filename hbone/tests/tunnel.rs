//! CONNECT tunnels end to end on loopback: data, half-close, resets, headers, statuses.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use h2::Reason;
use http::{HeaderMap, Request, StatusCode};
use mesh_hbone::{CertificateProvider, ConnectRequest, HboneError, InboundConnect};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("handler reported in time")
        .expect("handler reported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trip_carries_megabytes_and_identities() {
    let ca = ca();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = start_server(ca.clone(), server_id(), move |connect: InboundConnect| {
        let _ = tx.send((
            connect.peer_identity().clone(),
            connect.authority().to_string(),
            connect.authority_addr(),
            connect.local_addr(),
            connect.peer_addr(),
        ));
        echo(connect)
    })
    .await;
    let pool = pool(ca);
    let stream = pool
        .connect(&key(server.addr), request("10.1.2.3:8080"))
        .await
        .expect("tunnel");
    assert_eq!(stream.peer_identity(), &server_id());
    assert_eq!(stream.peer_addr(), server.addr);

    // More than the 4 MiB stream window and the 16 MiB connection window: flow control must
    // release capacity as data is read, in both directions.
    let payload: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let sent = payload.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await.expect("write");
        writer.shutdown().await.expect("shutdown");
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut back))
        .await
        .expect("echo in time")
        .expect("read");
    writing.await.expect("writer");
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");

    let (peer, authority, authority_addr, local, peer_addr) = recv(&mut rx).await;
    assert_eq!(peer, client_id());
    assert_eq!(authority, "10.1.2.3:8080");
    assert_eq!(authority_addr, Some("10.1.2.3:8080".parse().expect("addr")));
    assert_eq!(local, server.addr);
    assert!(peer_addr.ip().is_loopback());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_lets_the_server_answer_after_eof() {
    let ca = ca();
    let server = start_server(
        ca.clone(),
        server_id(),
        |connect: InboundConnect| async move {
            let mut stream = connect.accept(HeaderMap::new()).expect("accept");
            let mut request = Vec::new();
            stream.read_to_end(&mut request).await.expect("read to EOF");
            let answer = format!("got {}", String::from_utf8_lossy(&request));
            stream
                .write_all(answer.as_bytes())
                .await
                .expect("write after EOF");
            stream.shutdown().await.expect("shutdown");
        },
    )
    .await;
    let pool = pool(ca);
    let mut stream = pool
        .connect(&key(server.addr), request("10.0.0.1:80"))
        .await
        .expect("tunnel");
    assert_eq!(round_trip(&mut stream, b"ping").await, b"got ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_half_close_lets_the_client_write_after_eof() {
    let ca = ca();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = start_server(ca.clone(), server_id(), move |connect: InboundConnect| {
        let tx = tx.clone();
        async move {
            let mut stream = connect.accept(HeaderMap::new()).expect("accept");
            stream.write_all(b"hello").await.expect("write");
            stream.shutdown().await.expect("half-close");
            let mut rest = Vec::new();
            stream
                .read_to_end(&mut rest)
                .await
                .expect("read after half-close");
            let _ = tx.send(rest);
        }
    })
    .await;
    let pool = pool(ca);
    let mut stream = pool
        .connect(&key(server.addr), request("10.0.0.1:80"))
        .await
        .expect("tunnel");
    let mut greeting = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut greeting))
        .await
        .expect("EOF in time")
        .expect("read");
    assert_eq!(greeting, b"hello");
    stream
        .write_all(b"bye")
        .await
        .expect("write after peer EOF");
    stream.shutdown().await.expect("shutdown");
    assert_eq!(recv(&mut rx).await, b"bye");
}

/// The handler writes "partial", waits for the client's ack, then resets with `reason`.
async fn reset_after_ack(reason: Reason) -> std::io::Result<usize> {
    let ca = ca();
    let server = start_server(
        ca.clone(),
        server_id(),
        move |connect: InboundConnect| async move {
            let mut stream = connect.accept(HeaderMap::new()).expect("accept");
            stream.write_all(b"partial").await.expect("write");
            let mut ack = [0u8; 3];
            stream.read_exact(&mut ack).await.expect("ack");
            stream.abort(reason);
        },
    )
    .await;
    let pool = pool(ca);
    let mut stream = pool
        .connect(&key(server.addr), request("10.0.0.1:80"))
        .await
        .expect("tunnel");
    let mut partial = [0u8; 7];
    stream.read_exact(&mut partial).await.expect("partial");
    assert_eq!(&partial, b"partial");
    stream.write_all(b"ack").await.expect("ack");
    let mut rest = [0u8; 16];
    let read = tokio::time::timeout(WAIT, stream.read(&mut rest))
        .await
        .expect("reset seen in time");
    let write = stream
        .write_all(b"more")
        .await
        .expect_err("write after reset");
    let expected = match reason {
        Reason::CANCEL | Reason::NO_ERROR => std::io::ErrorKind::BrokenPipe,
        _ => std::io::ErrorKind::ConnectionReset,
    };
    assert_eq!(write.kind(), expected, "{write}");
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rst_stream_cancel_reads_as_eof() {
    assert_eq!(
        reset_after_ack(Reason::CANCEL)
            .await
            .expect("EOF, not error"),
        0
    );
    assert_eq!(
        reset_after_ack(Reason::NO_ERROR)
            .await
            .expect("EOF, not error"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_resets_read_as_errors() {
    let err = reset_after_ack(Reason::INTERNAL_ERROR)
        .await
        .expect_err("INTERNAL_ERROR is an error");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_shutdown_still_delivers_the_data() {
    const SIZE: usize = 3 * 1024 * 1024;
    let ca = ca();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = start_server(ca.clone(), server_id(), move |connect: InboundConnect| {
        let tx = tx.clone();
        async move {
            let server_writes = connect.authority().ends_with(":1");
            let mut stream = connect.accept(HeaderMap::new()).expect("accept");
            if server_writes {
                stream.write_all(&vec![7u8; SIZE]).await.expect("write");
                drop(stream);
            } else {
                let mut got = Vec::new();
                let result = stream.read_to_end(&mut got).await.map(|_| got.len());
                let _ = tx.send(result.map_err(|e| e.to_string()));
            }
        }
    })
    .await;
    let pool = pool(ca);

    // Server writes and drops: the client reads everything and then EOF.
    let mut stream = pool
        .connect(&key(server.addr), request("10.0.0.1:1"))
        .await
        .expect("tunnel");
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut got))
        .await
        .expect("in time")
        .expect("clean EOF");
    assert_eq!(got.len(), SIZE);
    drop(stream);

    // Client writes and drops: the server reads everything and then EOF.
    let mut stream = pool
        .connect(&key(server.addr), request("10.0.0.1:2"))
        .await
        .expect("tunnel");
    stream.write_all(&vec![9u8; SIZE]).await.expect("write");
    drop(stream);
    assert_eq!(recv(&mut rx).await, Ok(SIZE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_connect_is_accepted_and_headers_are_delivered() {
    let ca = ca();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = start_server(ca.clone(), server_id(), move |connect: InboundConnect| {
        let _ = tx.send(connect.headers().clone());
        let mut answer = HeaderMap::new();
        answer.insert(
            "baggage",
            "k8s.deployment.name=server".parse().expect("value"),
        );
        async move {
            let _stream = connect.accept(answer).expect("accept");
        }
    })
    .await;
    let pool = pool(ca);

    pool.connect(&key(server.addr), request("10.0.0.1:80"))
        .await
        .expect("bare CONNECT accepted");
    let bare = recv(&mut rx).await;
    for name in ["baggage", "forwarded", "traceparent"] {
        assert!(!bare.contains_key(name), "{name} was not sent");
    }

    let mut headers = HeaderMap::new();
    let baggage = "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,service.name=client";
    let forwarded = "for=\"127.0.0.9:40000\";host=reviews.default.svc.cluster.local";
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    headers.insert("baggage", baggage.parse().expect("value"));
    headers.insert("forwarded", forwarded.parse().expect("value"));
    headers.insert("traceparent", traceparent.parse().expect("value"));
    let request = ConnectRequest {
        authority: "reviews.default.svc.cluster.local:9080".into(),
        headers,
    };
    pool.connect(&key(server.addr), request)
        .await
        .expect("CONNECT with headers");
    let seen = recv(&mut rx).await;
    assert_eq!(seen["baggage"], baggage);
    assert_eq!(seen["forwarded"], forwarded);
    assert_eq!(seen["traceparent"], traceparent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_statuses_surface_as_typed_errors() {
    let ca = ca();
    let server = start_server(
        ca.clone(),
        server_id(),
        |connect: InboundConnect| async move {
            let port = connect
                .authority_addr()
                .map(|a| a.port())
                .unwrap_or_default();
            match StatusCode::from_u16(port) {
                Ok(status) if port != 200 => connect.reject(status),
                _ => drop(connect), // unanswered: 503
            }
        },
    )
    .await;
    let pool = pool(ca);
    let open = |authority: &'static str| {
        let pool = pool.clone();
        let key = key(server.addr);
        async move { pool.connect(&key, request(authority)).await }
    };
    assert!(matches!(
        open("10.0.0.1:400").await,
        Err(HboneError::BadRequest)
    ));
    assert!(matches!(
        open("10.0.0.1:401").await,
        Err(HboneError::Unauthorized)
    ));
    assert!(matches!(
        open("10.0.0.1:503").await,
        Err(HboneError::Unavailable)
    ));
    let teapot = open("10.0.0.1:418").await.expect_err("418");
    assert_eq!(teapot.status(), Some(StatusCode::IM_A_TEAPOT));
    assert!(matches!(
        open("10.0.0.1:200").await,
        Err(HboneError::Unavailable)
    ));
    // Refusals do not spoil the pooled connection.
    assert_eq!(pool.stats().connections_opened, 1);
}

/// A plain h2 client over the mesh's TLS, to send what the pool never sends.
async fn raw_h2_client(
    ca: Arc<dyn CertificateProvider>,
    addr: std::net::SocketAddr,
) -> h2::client::SendRequest<bytes::Bytes> {
    let config = mesh_hbone::client_config(ca, client_id(), vec![server_id()]).expect("config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .expect("tls");
    let (send, connection) = h2::client::handshake(tls).await.expect("h2");
    tokio::spawn(connection);
    send
}

async fn status_of(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    request: Request<()>,
) -> StatusCode {
    let (response, _body) = send
        .clone()
        .ready()
        .await
        .expect("ready")
        .send_request(request, true)
        .expect("send");
    tokio::time::timeout(WAIT, response)
        .await
        .expect("answer in time")
        .expect("response")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_connect_and_bad_authority_get_400_without_the_handler() {
    let ca = ca();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let server = start_server(ca.clone(), server_id(), move |connect: InboundConnect| {
        counted.fetch_add(1, Ordering::SeqCst);
        echo(connect)
    })
    .await;
    let mut send = raw_h2_client(ca, server.addr).await;

    let get = Request::get("https://10.0.0.1/").body(()).expect("request");
    assert_eq!(status_of(&mut send, get).await, StatusCode::BAD_REQUEST);
    let no_port = Request::connect("10.0.0.1").body(()).expect("request");
    assert_eq!(status_of(&mut send, no_port).await, StatusCode::BAD_REQUEST);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let good = Request::connect("10.0.0.1:80").body(()).expect("request");
    assert_eq!(status_of(&mut send, good).await, StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
