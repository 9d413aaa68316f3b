//! RequestAuthentication end to end: real signed JWTs through the real waypoint, keys given
//! inline or fetched from a `jwksUri` (through the mesh over HBONE, or directly, over http or
//! https), refreshed and rotated, with policies that read the verified token.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use common::{Client, Harness, Reply, TRUST_DOMAIN, ip, manifest};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use mesh_config::fixtures::{self, policy, request_authentication};
use mesh_hbone::{Identity, LocalCa};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BLOCK: u8 = 114;
const FETCHING_BLOCK: u8 = 115;
const SLEEP: &str = "sleep";
const INLINE: &str = "https://inline.example";
const MESH: &str = "https://mesh.example";
const DIRECT: &str = "https://direct.example";

/// An ES256 key pair, its public half as a JWK.
struct Key {
    kid: &'static str,
    encoding: EncodingKey,
    jwk: Value,
}

impl Key {
    fn new(kid: &'static str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let public = pair.public_key_raw();
        let (x, y) = public[1..].split_at(32);
        Key {
            kid,
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
        }
    }

    /// A token from `issuer` for `sub`, expiring `expires_in` seconds from now, with `extra`
    /// claims.
    fn token(&self, issuer: &str, sub: &str, expires_in: i64, extra: Value) -> String {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let mut claims = json!({"iss": issuer, "sub": sub, "exp": now + expires_in});
        (claims.as_object_mut().expect("object"))
            .extend(extra.as_object().cloned().unwrap_or_default());
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.to_string());
        encode(&header, &claims, &self.encoding).expect("signs")
    }

    fn jwks(&self) -> String {
        json!({"keys": [self.jwk]}).to_string()
    }
}

/// What a JWKS server answers: a status and a body, changed as the test goes (status
/// [`HANG`]: never answers).
type Document = Arc<Mutex<(u16, String)>>;
const HANG: u16 = 0;

async fn answer(document: Document) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = document.lock().expect("document").clone();
    if status == HANG {
        std::future::pending::<()>().await;
    }
    Ok(Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response"))
}

/// A key server in the mesh: pod `jwks` (`127.<block>.2.30`), reached over HBONE.
async fn mesh_jwks_server(
    block: u8,
    ca: Arc<LocalCa>,
    document: Document,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = SocketAddr::new(ip(block, "2.30"), mesh_core::ports::HBONE);
    let listener = TcpListener::bind(addr).await?;
    let tls = mesh_hbone::server_config(ca, Identity::new(TRUST_DOMAIN, "default", "jwks"))?;
    let handler = move |connect: mesh_hbone::InboundConnect| {
        let document = document.clone();
        async move {
            let Ok(stream) = connect.accept(http::HeaderMap::new()) else {
                return;
            };
            let service =
                hyper::service::service_fn(move |_: Request<Incoming>| answer(document.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    };
    tokio::spawn(mesh_hbone::Server::new(tls).serve(listener, handler, shutdown));
    Ok(())
}

/// A key server outside the mesh, on plain TCP at `127.<block>.9.1:8080`.
async fn direct_jwks_server(block: u8, document: Document) -> anyhow::Result<()> {
    let listener = TcpListener::bind(SocketAddr::new(ip(block, "9.1"), 8080)).await?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let document = document.clone();
            let service =
                hyper::service::service_fn(move |_: Request<Incoming>| answer(document.clone()));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(())
}

/// The key server's Service and pod, the RequestAuthentication (an inline rule, one fetched
/// through the mesh, one fetched directly) and the policies that read the tokens.
fn objects(block: u8, inline: &Key) -> Vec<Value> {
    let mut jwks_service = fixtures::service(
        "default",
        "jwks",
        &ip(block, "100.20").to_string(),
        json!({"app": "jwks"}),
    );
    jwks_service["spec"]["ports"] = json!([{"name": "http", "port": 8000, "targetPort": 8000}]);
    let jwks_pod = fixtures::pod(
        "default",
        "jwks",
        &ip(block, "2.30").to_string(),
        json!({"app": "jwks"}),
    );
    let gateway =
        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}]);
    let authentication = request_authentication(
        "default",
        "jwt",
        json!({"targetRefs": gateway, "jwtRules": [
            {"issuer": INLINE, "jwks": inline.jwks(), "audiences": ["reviews"],
             "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]},
            {"issuer": MESH, "jwksUri": "http://jwks.default.svc.cluster.local:8000/keys",
             "timeout": "200ms"},
            {"issuer": DIRECT, "jwksUri": format!("http://{}:8080/keys", ip(block, "9.1")),
             "fromHeaders": [{"name": "x-token"}], "forwardOriginalToken": true},
        ]}),
    );
    let require_jwt = policy(
        "default",
        "require-jwt",
        json!({"targetRefs": gateway, "action": "DENY", "rules": [{
            "from": [{"source": {"notRequestPrincipals": ["*"]}}],
            "to": [{"operation": {"paths": ["/secure*", "/admin*"]}}]}]}),
    );
    let admins = policy(
        "default",
        "admins-only",
        json!({"targetRefs": gateway, "action": "DENY", "rules": [{
            "to": [{"operation": {"paths": ["/admin*"]}}],
            "when": [{"key": "request.auth.claims[groups]", "notValues": ["admin"]}]}]}),
    );
    vec![jwks_service, jwks_pod, authentication, require_jwt, admins]
}

async fn get(client: &mut Client, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
    let mut request = Request::get(format!("http://reviews.default:9080{path}"))
        .header(http::header::HOST, "reviews.default:9080");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    client.send(request.body(Full::new(Bytes::new()))?).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asks until `path` with `headers` answers `status` (a key set being fetched), for 5 s.
async fn eventually(
    client: &mut Client,
    path: &str,
    headers: &[(&str, &str)],
    status: u16,
) -> anyhow::Result<Reply> {
    let mut last = None;
    for _ in 0..100 {
        let reply = get(client, path, headers).await?;
        if reply.status == status {
            return Ok(reply);
        }
        last = Some(reply);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{path} never answered {status}; last: {last:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_and_policies_read_them() -> anyhow::Result<()> {
    let inline = Key::new("inline-1");
    let timeouts = waypoint::Timeouts {
        jwks_refresh: Duration::from_millis(300),
        ..waypoint::Timeouts::default()
    };
    let h =
        Harness::start_with(BLOCK, &manifest(BLOCK, &objects(BLOCK, &inline)), timeouts).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut caller = h.http1(SLEEP).await?;

    // No token: passes authentication; a policy may still demand one.
    assert_eq!(get(&mut caller, "/open", &[]).await?.status, 200);
    let denied = get(&mut caller, "/secure", &[]).await?;
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (403, "RBAC: access denied\n")
    );

    // A valid token: its principal satisfies the policy, its claim reaches the backend as a
    // header, and the token itself does not.
    let alice = inline.token(INLINE, "alice", 600, json!({"aud": "reviews"}));
    let served = get(
        &mut caller,
        "/secure",
        &[("authorization", &bearer(&alice))],
    )
    .await?;
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(served.header("x-echo-x-jwt-sub"), Some("alice"));
    assert_eq!(served.header("x-echo-authorization"), None);
    // A caller's own claim header never passes as proved, with or without a token.
    let spoofed = [
        ("authorization", bearer(&alice)),
        ("x-jwt-sub", "root".to_string()),
    ];
    let spoofed: Vec<(&str, &str)> = spoofed.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let served = get(&mut caller, "/secure", &spoofed).await?;
    assert_eq!(served.header("x-echo-x-jwt-sub"), Some("alice"));
    let served = get(&mut caller, "/open", &[("x-jwt-sub", "root")]).await?;
    assert_eq!(
        (served.status, served.header("x-echo-x-jwt-sub")),
        (200, None)
    );

    // Bad tokens: 401, in Envoy's words, with a challenge naming the URL.
    let expired = inline.token(INLINE, "alice", -300, json!({"aud": "reviews"}));
    let wrong_audience = inline.token(INLINE, "alice", 600, json!({"aud": "ratings"}));
    let unknown_issuer = inline.token("https://nobody.example", "alice", 600, json!({}));
    let forged = Key::new("inline-1").token(INLINE, "alice", 600, json!({"aud": "reviews"}));
    for (token, why) in [
        (expired.as_str(), "Jwt is expired"),
        (&wrong_audience, "Audiences in Jwt are not allowed"),
        (&unknown_issuer, "Jwt issuer is not configured"),
        (&forged, "Jwt verification fails"),
        (
            "garbage",
            "Jwt is not in the form of Header.Payload.Signature",
        ),
    ] {
        let refused = get(&mut caller, "/open", &[("authorization", &bearer(token))]).await?;
        assert_eq!(refused.status, 401, "{why}: {refused:?}");
        assert!(refused.body.starts_with(why), "{why}: {}", refused.body);
        assert_eq!(
            refused.header("www-authenticate"),
            Some("Bearer realm=\"http://reviews.default:9080/open\", error=\"invalid_token\""),
        );
    }

    // A 100 KB token: over the header limits, 431, never parsed.
    let huge = format!("{}.{}.sig", "e".repeat(50_000), "e".repeat(50_000));
    let refused = get(&mut caller, "/open", &[("authorization", &bearer(&huge))]).await?;
    assert_eq!(refused.status, 431, "{refused:?}");
    let mut caller = h.http1(SLEEP).await?;

    // A claim condition: only the admin group may reach /admin.
    let admin = inline.token(
        INLINE,
        "root",
        600,
        json!({"aud": "reviews", "groups": ["dev", "admin"]}),
    );
    let dev = inline.token(
        INLINE,
        "bob",
        600,
        json!({"aud": "reviews", "groups": ["dev"]}),
    );
    assert_eq!(
        get(&mut caller, "/admin", &[("authorization", &bearer(&admin))])
            .await?
            .status,
        200
    );
    assert_eq!(
        get(&mut caller, "/admin", &[("authorization", &bearer(&dev))])
            .await?
            .status,
        403
    );
    // gRPC callers get the refusal as gRPC's UNAUTHENTICATED.
    let mut grpc = h.h2c(SLEEP).await?;
    let request = Request::post("http://reviews.default:9080/pkg.Svc/Call")
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("authorization", bearer(&expired))
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))?;
    let refused = grpc.send(request).await?;
    assert_eq!(
        (refused.status, refused.header("grpc-status")),
        (200, Some("16"))
    );
    assert_eq!(refused.header("grpc-message"), Some("Jwt is expired"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_uris_are_fetched_refreshed_and_kept_through_failures() -> anyhow::Result<()> {
    let inline = Key::new("inline-1");
    let first = Key::new("mesh-1");
    let second = Key::new("mesh-2");
    let direct = Key::new("direct-1");
    let timeouts = waypoint::Timeouts {
        jwks_refresh: Duration::from_millis(300),
        ..waypoint::Timeouts::default()
    };
    let mesh_document: Document = Arc::new(Mutex::new((200, first.jwks())));
    let direct_document: Document = Arc::new(Mutex::new((503, "not yet".to_string())));
    let block = FETCHING_BLOCK;
    let h =
        Harness::start_with(block, &manifest(block, &objects(block, &inline)), timeouts).await?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    mesh_jwks_server(block, h.ca.clone(), mesh_document.clone(), shutdown).await?;
    direct_jwks_server(block, direct_document.clone()).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut caller = h.http1(SLEEP).await?;

    // Through the mesh: the key server is a pod behind HBONE.
    let token = first.token(MESH, "carol", 600, json!({}));
    let auth = bearer(&token);
    eventually(&mut caller, "/secure", &[("authorization", &auth)], 200).await?;

    // Directly: refused while its server fails, served once it answers.
    let token = direct.token(DIRECT, "dan", 600, json!({}));
    let refused = get(&mut caller, "/secure", &[("x-token", &token)]).await?;
    assert_eq!(refused.status, 401);
    assert!(
        refused.body.starts_with("Jwks remote fetch is failed"),
        "{refused:?}"
    );
    *direct_document.lock().expect("document") = (200, direct.jwks());
    let served = eventually(&mut caller, "/secure", &[("x-token", &token)], 200).await?;
    // forwardOriginalToken: the backend gets the token as sent.
    assert_eq!(served.header("x-echo-x-token"), Some(token.as_str()));

    // Rotation: the server now publishes the second key; its tokens hold after a refresh, and
    // the first key's no longer do.
    *mesh_document.lock().expect("document") = (200, second.jwks());
    let rotated = bearer(&second.token(MESH, "carol", 600, json!({})));
    eventually(&mut caller, "/secure", &[("authorization", &rotated)], 200).await?;
    let old = get(&mut caller, "/secure", &[("authorization", &auth)]).await?;
    assert_eq!(old.status, 401, "{old:?}");

    // A server that hangs is given up on after the rule's timeout (200 ms) and the last good
    // key set stays; the fetcher goes on, and picks up the next set once the server answers.
    let serves_after = async |caller: &mut Client, answer: (u16, String), token: &str| {
        *mesh_document.lock().expect("document") = answer;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let reply = get(caller, "/secure", &[("authorization", token)]).await?;
        anyhow::Ok(reply.status)
    };
    let hang = (HANG, String::new());
    assert_eq!(serves_after(&mut caller, hang, &rotated).await?, 200);
    *mesh_document.lock().expect("document") = (200, first.jwks());
    eventually(&mut caller, "/secure", &[("authorization", &auth)], 200).await?;

    // The server breaks (garbage, then errors): the last good key set stays in use.
    let garbage = (200, "<html>oops</html>".to_string());
    assert_eq!(serves_after(&mut caller, garbage, &auth).await?, 200);
    assert_eq!(
        serves_after(&mut caller, (500, String::new()), &auth).await?,
        200
    );
    Ok(())
}

const HTTPS_BLOCK: u8 = 117;

/// A CA for the tests' TLS key servers, and its certificate (to trust it, or not).
fn test_ca() -> anyhow::Result<(
    rcgen::Issuer<'static, rcgen::KeyPair>,
    CertificateDer<'static>,
)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key)?;
    Ok((rcgen::Issuer::new(params, key), cert.der().clone()))
}

/// A key server over TLS at `127.<HTTPS_BLOCK>.<rest>:8443`, its certificate (for its address)
/// signed by `issuer`.
async fn tls_jwks_server(
    rest: &str,
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    document: Document,
) -> anyhow::Result<()> {
    let address = ip(HTTPS_BLOCK, rest);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(address)];
    let cert = params.signed_by(&key, issuer)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(SocketAddr::new(address, 8443)).await?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, document) = (acceptor.clone(), document.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                // It is its own OpenID issuer too: its discovery document names its keys.
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let discovery = request.uri().path() == "/.well-known/openid-configuration";
                    let document = match discovery {
                        false => document.clone(),
                        true => {
                            let keys = format!("https://{address}:8443/keys");
                            Arc::new(Mutex::new((200, json!({"jwks_uri": keys}).to_string())))
                        }
                    };
                    answer(document)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_key_servers_are_verified_against_the_trusted_roots() -> anyhow::Result<()> {
    let (trusted, trusted_root) = test_ca()?;
    let (stranger, _) = test_ca()?;
    let good = Key::new("tls-1");
    let tls_issuer = "https://tls.example";
    let untrusted_issuer = "https://untrusted.example";
    let oidc_issuer = format!("https://{}:8443", ip(HTTPS_BLOCK, "9.2"));
    tls_jwks_server("9.2", &trusted, Arc::new(Mutex::new((200, good.jwks())))).await?;
    tls_jwks_server("9.3", &stranger, Arc::new(Mutex::new((200, good.jwks())))).await?;
    let gateway =
        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}]);
    let at = |rest: &str| format!("https://{}:8443/keys", ip(HTTPS_BLOCK, rest));
    let authentication = request_authentication(
        "default",
        "jwt",
        json!({"targetRefs": gateway, "jwtRules": [
            {"issuer": tls_issuer, "jwksUri": at("9.2")},
            {"issuer": untrusted_issuer, "jwksUri": at("9.3")},
            // No keys named: found through the issuer's OpenID discovery document.
            {"issuer": oidc_issuer},
        ]}),
    );
    let require_jwt = policy(
        "default",
        "require-jwt",
        json!({"targetRefs": gateway, "action": "DENY", "rules": [{
            "from": [{"source": {"notRequestPrincipals": ["*"]}}]}]}),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted_root)?;
    let timeouts = waypoint::Timeouts {
        jwks_refresh: Duration::from_millis(300),
        ..waypoint::Timeouts::default()
    };
    let manifest = manifest(HTTPS_BLOCK, &[authentication, require_jwt]);
    let tls = waypoint::authn::jwks::tls_trusting(roots);
    let h = Harness::start_trusting(HTTPS_BLOCK, &manifest, timeouts, Some(tls)).await?;
    let _v1 = h.backend("v1").await?;
    let _v2 = h.backend("v2").await?;
    let mut caller = h.http1(SLEEP).await?;

    // Fetched over TLS from a server the waypoint trusts: its tokens hold.
    let token = bearer(&good.token(tls_issuer, "tina", 600, json!({})));
    eventually(&mut caller, "/secure", &[("authorization", &token)], 200).await?;
    let token = bearer(&good.token(&oidc_issuer, "olga", 600, json!({})));
    eventually(&mut caller, "/secure", &[("authorization", &token)], 200).await?;
    // A server whose certificate no trusted root signed is never believed: the same keys,
    // claimed by it, verify nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let token = bearer(&good.token(untrusted_issuer, "tina", 600, json!({})));
    let refused = get(&mut caller, "/secure", &[("authorization", &token)]).await?;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        refused.body.starts_with("Jwks remote fetch is failed"),
        "{refused:?}"
    );
    Ok(())
}
