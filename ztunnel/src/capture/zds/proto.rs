//! The messages of istio-cni's ZDS protocol (`istio.workload.zds`, istio/ztunnel
//! `proto/zds.proto`), written out with prost's derives: six small messages do not need a
//! build-time protobuf compiler.

/// `Version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Version {
    NotUsed = 0,
    V1 = 1,
}

/// Sent by the ztunnel first, on every new connection.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ZdsHello {
    #[prost(enumeration = "Version", tag = "1")]
    pub version: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub service_account: String,
}

/// A pod to serve; its network namespace comes with it as a file descriptor (`SCM_RIGHTS`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddWorkload {
    #[prost(string, tag = "1")]
    pub uid: String,
    #[prost(message, optional, tag = "2")]
    pub workload_info: Option<WorkloadInfo>,
}

/// Before the snapshot ends: a pod to keep although its namespace is not sent again.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeepWorkload {
    #[prost(string, tag = "1")]
    pub uid: String,
}

/// A pod to stop serving.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DelWorkload {
    #[prost(string, tag = "2")]
    pub uid: String,
}

/// Every pod of the node was sent: those not sent are gone.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotSent {}

/// The answer to every request; an error when `error` is not empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    #[prost(string, tag = "1")]
    pub error: String,
}

/// From the node agent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadRequest {
    #[prost(oneof = "Request", tags = "1, 5, 2, 3")]
    pub payload: Option<Request>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Request {
    #[prost(message, tag = "1")]
    Add(AddWorkload),
    #[prost(message, tag = "5")]
    Keep(KeepWorkload),
    #[prost(message, tag = "2")]
    Del(DelWorkload),
    #[prost(message, tag = "3")]
    SnapshotSent(SnapshotSent),
}

/// From the ztunnel.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadResponse {
    #[prost(oneof = "Response", tags = "1")]
    pub payload: Option<Response>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Response {
    #[prost(message, tag = "1")]
    Ack(Ack),
}

impl WorkloadResponse {
    pub fn ack(error: Option<String>) -> Self {
        WorkloadResponse {
            payload: Some(Response::Ack(Ack {
                error: error.unwrap_or_default(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn field_numbers_are_istios() {
        // DelWorkload's uid is field 2 and KeepWorkload is payload 5 in zds.proto: bytes
        // written by hand from the proto, so a wrong tag here cannot go unnoticed.
        let del = WorkloadRequest {
            payload: Some(Request::Del(DelWorkload { uid: "u".into() })),
        };
        assert_eq!(del.encode_to_vec(), [0x12, 0x03, 0x12, 0x01, b'u']);
        let keep = WorkloadRequest {
            payload: Some(Request::Keep(KeepWorkload { uid: "u".into() })),
        };
        assert_eq!(keep.encode_to_vec(), [0x2a, 0x03, 0x0a, 0x01, b'u']);
        let hello = ZdsHello {
            version: Version::V1 as i32,
        };
        assert_eq!(hello.encode_to_vec(), [0x08, 0x01]);
        let snapshot = WorkloadRequest {
            payload: Some(Request::SnapshotSent(SnapshotSent {})),
        };
        assert_eq!(snapshot.encode_to_vec(), [0x1a, 0x00]);
    }
}
