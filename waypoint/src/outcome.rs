//! One classifier for everything that can go wrong while proxying: a Pingora error (which
//! records where it came from) becomes a response flag and the status the caller sees. Pure,
//! so every case is tested. (Upstream failures are the upstream's own: `upstream::forward`.)

use mesh_core::ResponseFlag;
use pingora_error::{Error, ErrorSource, ErrorType};

/// What an error means for the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub flag: ResponseFlag,
    /// The status to answer with; 0 when the caller is gone and nothing can be sent.
    pub status: u16,
}

/// Pingora's HTTP/1.1 body framing errors (custom error types of its private `body` module).
const INVALID_CHUNK: &str = "InvalidChunk";
const INVALID_TRAILER_END: &str = "InvalidTrailerEnd";
const PREMATURE_BODY_END: &str = "PrematureBodyEnd";

pub fn classify(e: &Error) -> Outcome {
    use ErrorType::*;
    let upstream = matches!(e.esource(), ErrorSource::Upstream);
    let downstream = matches!(e.esource(), ErrorSource::Downstream);
    let outcome = |flag, status| Outcome { flag, status };
    match e.etype() {
        HTTPStatus(status) => outcome(ResponseFlag::None, *status),
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
        | TLSHandshakeFailure | TLSHandshakeTimedout | TLSWantX509Lookup | InvalidCert
        | HandshakeError | BindError | SocketError
            if !downstream =>
        {
            outcome(ResponseFlag::UpstreamConnectionFailure, 503)
        }
        ReadTimedout | WriteTimedout if upstream => {
            outcome(ResponseFlag::UpstreamRequestTimeout, 504)
        }
        ConnectionClosed | ReadError | WriteError if upstream => {
            outcome(ResponseFlag::UpstreamConnectionTermination, 503)
        }
        H2Error if upstream => outcome(ResponseFlag::UpstreamRemoteReset, 503),
        InvalidHTTPHeader | H1Error | InvalidH2 | H2Downgrade if upstream => {
            outcome(ResponseFlag::UpstreamProtocolError, 502)
        }
        ConnectionClosed | ReadError | WriteError | ReadTimedout | WriteTimedout if downstream => {
            outcome(ResponseFlag::DownstreamConnectionTermination, 0)
        }
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade if downstream => {
            outcome(ResponseFlag::DownstreamProtocolError, 400)
        }
        Custom(INVALID_CHUNK | INVALID_TRAILER_END) if !upstream => {
            outcome(ResponseFlag::DownstreamProtocolError, 400)
        }
        Custom(PREMATURE_BODY_END) if !upstream => {
            outcome(ResponseFlag::DownstreamConnectionTermination, 0)
        }
        _ if upstream => outcome(ResponseFlag::UpstreamProtocolError, 502),
        _ => outcome(ResponseFlag::None, 500),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(etype: ErrorType, source: ErrorSource) -> Box<Error> {
        let mut e = Error::new(etype);
        e.esource = source;
        e
    }

    fn flag_status(etype: ErrorType, source: ErrorSource) -> (&'static str, u16) {
        let o = classify(&error(etype, source));
        (o.flag.as_str(), o.status)
    }

    #[test]
    fn connect_failures_are_uf_503() {
        for etype in [
            ErrorType::ConnectRefused,
            ErrorType::ConnectTimedout,
            ErrorType::ConnectProxyFailure,
            ErrorType::TLSHandshakeFailure,
        ] {
            for source in [ErrorSource::Upstream, ErrorSource::Unset] {
                let o = classify(&error(etype.clone(), source));
                assert_eq!((o.flag.as_str(), o.status), ("UF", 503), "{etype:?}");
            }
        }
    }

    #[test]
    fn upstream_failures_after_connect() {
        use ErrorSource::Upstream;
        assert_eq!(flag_status(ErrorType::ReadTimedout, Upstream), ("UT", 504));
        assert_eq!(flag_status(ErrorType::H2Error, Upstream), ("UR", 503));
        assert_eq!(
            flag_status(ErrorType::InvalidHTTPHeader, Upstream),
            ("UPE", 502)
        );
        assert_eq!(
            flag_status(ErrorType::InternalError, Upstream),
            ("UPE", 502)
        );
        let closed = error(ErrorType::ConnectionClosed, Upstream);
        assert_eq!(
            classify(&closed).flag,
            ResponseFlag::UpstreamConnectionTermination
        );
    }

    #[test]
    fn downstream_failures_blame_the_caller() {
        use ErrorSource::Downstream;
        assert_eq!(
            flag_status(ErrorType::ConnectionClosed, Downstream),
            ("DC", 0)
        );
        assert_eq!(flag_status(ErrorType::WriteError, Downstream), ("DC", 0));
        assert_eq!(
            flag_status(ErrorType::InvalidHTTPHeader, Downstream),
            ("DPE", 400)
        );
        assert_eq!(flag_status(ErrorType::H2Error, Downstream), ("DPE", 400));
        // A malformed chunked body from the caller is its protocol error, not ours (was 500).
        let chunk = ErrorType::Custom(INVALID_CHUNK);
        assert_eq!(flag_status(chunk.clone(), Downstream), ("DPE", 400));
        assert_eq!(flag_status(chunk.clone(), ErrorSource::Unset), ("DPE", 400));
        assert_eq!(flag_status(chunk, ErrorSource::Upstream), ("UPE", 502));
        let cut = ErrorType::Custom(PREMATURE_BODY_END);
        assert_eq!(flag_status(cut, Downstream), ("DC", 0));
    }

    #[test]
    fn explicit_statuses_and_internal_errors() {
        let o = classify(&error(ErrorType::HTTPStatus(429), ErrorSource::Internal));
        assert_eq!((o.flag, o.status), (ResponseFlag::None, 429));
        let o = classify(&error(ErrorType::InternalError, ErrorSource::Internal));
        assert_eq!((o.flag, o.status), (ResponseFlag::None, 500));
    }
}
