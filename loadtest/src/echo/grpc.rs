//! gRPC on the echo server's own port, for requests whose content type is `application/grpc`:
//! the standard health service (`grpc.health.v1.Health`: `Check` unary, `Watch` server
//! streaming; the server itself, service `""`, is SERVING) and server reflection v1
//! (`ServerReflectionInfo`, bidirectional streaming). Enough for a gRPC client, a health
//! prober or a load generator to exercise a mesh's gRPC path against a real server.

use std::convert::Infallible;

use http::header::CONTENT_TYPE;
use http::{Request, Response};
use hyper::body::Incoming;
use tonic::body::Body as GrpcBody;
use tonic::server::NamedService;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

type GrpcService = BoxCloneSyncService<Request<Incoming>, Response<GrpcBody>, Infallible>;

/// The gRPC services of one echo server.
#[derive(Clone)]
pub struct GrpcApps {
    health: GrpcService,
    /// None only if the reflection index of the health service's (built-in) descriptors
    /// could not be built, which is logged.
    reflection: Option<GrpcService>,
}

impl std::fmt::Debug for GrpcApps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcApps")
    }
}

impl Default for GrpcApps {
    fn default() -> Self {
        let reporter = HealthReporter::new();
        let health = HealthServer::new(HealthService::from_health_reporter(reporter));
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .inspect_err(|error| tracing::warn!(%error, "gRPC reflection is off"))
            .ok();
        Self {
            health: BoxCloneSyncService::new(health),
            reflection: reflection.map(BoxCloneSyncService::new),
        }
    }
}

impl GrpcApps {
    /// Serves one gRPC call; a service it does not have is UNIMPLEMENTED, as gRPC says.
    pub async fn call(&self, request: Request<Incoming>) -> Response<GrpcBody> {
        let name = grpc_service(request.uri().path()).unwrap_or("");
        let Some(service) = self.service(name) else {
            return tonic::Status::unimplemented(format!("unknown service {name:?}")).into_http();
        };
        match service.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    fn service(&self, name: &str) -> Option<GrpcService> {
        match name {
            HEALTH => Some(self.health.clone()),
            REFLECTION => self.reflection.clone(),
            _ => None,
        }
    }
}

const HEALTH: &str = <HealthServer<HealthService> as NamedService>::NAME;
const REFLECTION: &str = <ServerReflectionServer<()> as NamedService>::NAME;

/// Whether a request is a gRPC call (`application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value == "application/grpc" || value.starts_with("application/grpc+"))
}

/// The service of a gRPC path `/<package.Service>/<Method>`.
fn grpc_service(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_name_their_service() {
        let health = "/grpc.health.v1.Health/Check";
        assert_eq!(grpc_service(health), Some(HEALTH));
        assert_eq!(grpc_service("/a.B/C"), Some("a.B"));
        for bad in ["", "/", "/a.B", "/a.B/", "//C", "/a/b/c", "a.B/C"] {
            assert_eq!(grpc_service(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_is_recognised_by_content_type() {
        let with = |value: &str| Request::builder().header(CONTENT_TYPE, value).body(());
        for grpc in ["application/grpc", "application/grpc+proto"] {
            assert!(is_grpc(&with(grpc).expect("request")), "{grpc}");
        }
        for other in ["application/grpcx", "application/json", "text/plain"] {
            assert!(!is_grpc(&with(other).expect("request")), "{other}");
        }
        assert!(!is_grpc(&Request::new(())));
    }
}
