//! One classifier for everything that can go wrong while proxying: a Pingora error (which
//! records where it came from and whether it may be retried) becomes a response flag, the
//! status the caller sees, and whether a retry could be safe. Pure, so every case is tested.

use mesh_core::ResponseFlag;
use pingora_error::{Error, ErrorSource, ErrorType, RetryType};

/// What an error means for the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub flag: ResponseFlag,
    /// The status to answer with; 0 when the caller is gone and nothing can be sent.
    pub status: u16,
    pub retry: Retry,
}

/// Whether the failed attempt may be tried again, as far as the error alone can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The request may have reached the application, or the failure is the caller's.
    Unsafe,
    /// Nothing was sent upstream (the connection was never made): safe for any method.
    NotSent,
    /// A reused upstream connection was found closed before any response byte: the request
    /// was not processed by that connection; safe for idempotent methods.
    ReusedConnection,
}

/// Pingora's HTTP/1.1 body framing errors (custom error types of its private `body` module).
const INVALID_CHUNK: &str = "InvalidChunk";
const INVALID_TRAILER_END: &str = "InvalidTrailerEnd";
const PREMATURE_BODY_END: &str = "PrematureBodyEnd";

pub fn classify(e: &Error) -> Outcome {
    use ErrorType::*;
    let upstream = matches!(e.esource(), ErrorSource::Upstream);
    let downstream = matches!(e.esource(), ErrorSource::Downstream);
    let reused = matches!(e.retry, RetryType::ReusedOnly | RetryType::Decided(true));
    let outcome = |flag, status, retry| Outcome {
        flag,
        status,
        retry,
    };
    match e.etype() {
        HTTPStatus(status) => outcome(ResponseFlag::None, *status, Retry::Unsafe),
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
        | TLSHandshakeFailure | TLSHandshakeTimedout | TLSWantX509Lookup | InvalidCert
        | HandshakeError | BindError | SocketError
            if !downstream =>
        {
            outcome(ResponseFlag::UpstreamConnectionFailure, 503, Retry::NotSent)
        }
        ReadTimedout | WriteTimedout if upstream => {
            outcome(ResponseFlag::UpstreamRequestTimeout, 504, Retry::Unsafe)
        }
        ConnectionClosed | ReadError | WriteError if upstream => {
            let retry = if reused {
                Retry::ReusedConnection
            } else {
                Retry::Unsafe
            };
            outcome(ResponseFlag::UpstreamConnectionTermination, 503, retry)
        }
        H2Error if upstream => outcome(ResponseFlag::UpstreamRemoteReset, 503, Retry::Unsafe),
        InvalidHTTPHeader | H1Error | InvalidH2 | H2Downgrade if upstream => {
            outcome(ResponseFlag::UpstreamProtocolError, 502, Retry::Unsafe)
        }
        ConnectionClosed | ReadError | WriteError | ReadTimedout | WriteTimedout if downstream => {
            outcome(
                ResponseFlag::DownstreamConnectionTermination,
                0,
                Retry::Unsafe,
            )
        }
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade if downstream => {
            outcome(ResponseFlag::DownstreamProtocolError, 400, Retry::Unsafe)
        }
        Custom(INVALID_CHUNK | INVALID_TRAILER_END) if !upstream => {
            outcome(ResponseFlag::DownstreamProtocolError, 400, Retry::Unsafe)
        }
        Custom(PREMATURE_BODY_END) if !upstream => outcome(
            ResponseFlag::DownstreamConnectionTermination,
            0,
            Retry::Unsafe,
        ),
        _ if upstream => outcome(ResponseFlag::UpstreamProtocolError, 502, Retry::Unsafe),
        _ => outcome(ResponseFlag::None, 500, Retry::Unsafe),
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
    fn connect_failures_are_uf_503_and_were_never_sent() {
        for etype in [
            ErrorType::ConnectRefused,
            ErrorType::ConnectTimedout,
            ErrorType::ConnectProxyFailure,
            ErrorType::TLSHandshakeFailure,
        ] {
            for source in [ErrorSource::Upstream, ErrorSource::Unset] {
                let o = classify(&error(etype.clone(), source));
                assert_eq!((o.flag.as_str(), o.status), ("UF", 503), "{etype:?}");
                assert_eq!(o.retry, Retry::NotSent);
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
        let mut closed = error(ErrorType::ConnectionClosed, Upstream);
        assert_eq!(
            classify(&closed).flag,
            ResponseFlag::UpstreamConnectionTermination
        );
        closed.retry = RetryType::Decided(false);
        assert_eq!(classify(&closed).retry, Retry::Unsafe);
        closed.retry = RetryType::ReusedOnly;
        assert_eq!(classify(&closed).retry, Retry::ReusedConnection);
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
