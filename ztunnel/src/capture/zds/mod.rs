//! Pods handed over by istio-cni's node agent over its ZDS socket, so this ztunnel can take
//! the place of Istio's on a node without replacing istio-cni (which writes the pods' redirect
//! rules itself). The ztunnel connects, says hello, and answers each request with an ack:
//!
//! - `AddWorkload` (with the pod's network namespace as a descriptor): serve the pod;
//! - `KeepWorkload` (before the snapshot ends): keep a pod already served;
//! - `DelWorkload`: stop serving it (its listeners close, open connections drain);
//! - `SnapshotSent`: pods neither added nor kept since connecting are gone.
//!
//! A request that breaks the protocol is refused (an ack with the error) and the connection
//! closed, to be made again; a namespace that cannot be used is refused for that pod alone.
//! While not connected with a snapshot received, the ztunnel is not ready.

pub mod packet;
pub mod proto;

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mesh_runtime::Netns;
use prost::Message;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::packet::SeqPacket;
use self::proto::{Request, Version, WorkloadRequest, WorkloadResponse, ZdsHello};
use super::rules::ZTUNNEL_MARK;

/// istio-cni's default socket path (`INPOD_UDS`).
pub const DEFAULT_SOCKET: &str = "/var/run/ztunnel/ztunnel.sock";

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// One handed-over pod.
#[derive(Clone, Debug)]
pub struct ZdsPod {
    pub namespace: String,
    pub name: String,
    pub netns: Netns,
    /// When it was handed over: of two pods of one name (one made again before the agent
    /// deleted the other), the later is the pod.
    pub added: u64,
}

/// The pods the node agent handed over, by uid; cheap to clone.
#[derive(Clone, Debug)]
pub struct ZdsPods {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pods: Mutex<HashMap<String, ZdsPod>>,
    /// Connected, with the node agent's snapshot received.
    synced: AtomicBool,
    /// Bumped on every change, for the ztunnel's reconcile.
    changed: watch::Sender<u64>,
}

impl Default for ZdsPods {
    fn default() -> Self {
        ZdsPods {
            inner: Arc::new(Inner {
                pods: Mutex::default(),
                synced: AtomicBool::new(false),
                changed: watch::Sender::new(0),
            }),
        }
    }
}

impl ZdsPods {
    /// The namespace of pod `namespace/name`, once handed over (the latest, if twice).
    pub fn netns_of(&self, namespace: &str, name: &str) -> Option<Netns> {
        (self.lock().values())
            .filter(|p| p.namespace == namespace && p.name == name)
            .max_by_key(|p| p.added)
            .map(|p| p.netns.clone())
    }

    pub fn synced(&self) -> bool {
        self.inner.synced.load(Ordering::Relaxed)
    }

    /// Changes whenever the pods or the sync state change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ZdsPod>> {
        self.inner.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.inner.changed.send_modify(|v| *v += 1);
    }

    fn set_synced(&self, synced: bool) {
        if self.inner.synced.swap(synced, Ordering::Relaxed) != synced {
            self.changed();
        }
    }
}

/// Connects to the node agent at `path` and follows it until `shutdown`, connecting again
/// (backing off from 10 ms to 15 s) whenever the connection ends.
pub async fn run(path: PathBuf, pods: ZdsPods, shutdown: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let session = async {
            let socket = SeqPacket::connect(&path)?;
            info!(socket = %path.display(), "connected to the CNI node agent");
            backoff = FIRST_BACKOFF;
            serve(&socket, &pods).await
        };
        let ended = tokio::select! {
            ended = session => ended,
            () = shutdown.cancelled() => return,
        };
        pods.set_synced(false);
        match ended {
            Ok(()) => info!(socket = %path.display(), "CNI node agent closed the connection"),
            Err(e) => {
                warn!(socket = %path.display(), error = %e, "CNI node agent connection failed")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: hello, then a request and its ack at a time, until the agent closes.
async fn serve(socket: &SeqPacket, pods: &ZdsPods) -> std::io::Result<()> {
    let hello = ZdsHello {
        version: Version::V1 as i32,
    };
    socket.send(&hello.encode_to_vec(), None).await?;
    let mut session = Session::default();
    loop {
        let answer = match socket.recv().await {
            Ok(None) => return Ok(()),
            Ok(Some(packet)) => session.apply(pods, &packet.data, packet.fds),
            Err(e) => Err(Refusal::Protocol(e.to_string())),
        };
        let error = match &answer {
            Ok(()) => None,
            Err(Refusal::Pod(why) | Refusal::Protocol(why)) => Some(why.clone()),
        };
        socket
            .send(&WorkloadResponse::ack(error).encode_to_vec(), None)
            .await?;
        if let Err(Refusal::Protocol(why)) = answer {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
        }
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// This pod cannot be served (its namespace is unusable); the connection goes on.
    Pod(String),
    /// The request breaks the protocol; the connection is closed.
    Protocol(String),
}

/// What one connection has seen.
#[derive(Debug, Default)]
struct Session {
    snapshot_sent: bool,
    /// Pods added or kept before the snapshot ended.
    in_snapshot: HashSet<String>,
}

impl Session {
    fn apply(&mut self, pods: &ZdsPods, data: &[u8], mut fds: Vec<OwnedFd>) -> Result<(), Refusal> {
        let protocol = |why: String| Refusal::Protocol(why);
        let request = WorkloadRequest::decode(data)
            .map_err(|e| protocol(format!("undecodable WorkloadRequest: {e}")))?;
        let payload = request
            .payload
            .ok_or_else(|| protocol("WorkloadRequest without a payload".into()))?;
        let expects_fd = matches!(payload, Request::Add(_));
        match (fds.len(), expects_fd) {
            (1, true) | (0, false) => {}
            (0, true) => {
                return Err(protocol(
                    "AddWorkload without a namespace descriptor".into(),
                ));
            }
            (n, _) => {
                return Err(protocol(format!(
                    "{n} descriptors where {} expected",
                    u8::from(expects_fd)
                )));
            }
        }
        match payload {
            Request::Add(add) => {
                let info = add.workload_info.ok_or_else(|| {
                    protocol(format!("AddWorkload {} without workload_info", add.uid))
                })?;
                let pod = format!("{}/{}", info.namespace, info.name);
                let fd = fds.pop().expect("one descriptor was checked");
                let netns = Netns::from_fd(fd, format!("netns of pod {pod}")).map_err(|e| {
                    warn!(pod = %pod, uid = %add.uid, error = %e, "pod refused: unusable network namespace");
                    Refusal::Pod(e.to_string())
                })?;
                if !self.snapshot_sent {
                    self.in_snapshot.insert(add.uid.clone());
                }
                info!(pod = %pod, uid = %add.uid, "pod handed over by the CNI node agent");
                let netns = netns.with_socket_mark(ZTUNNEL_MARK);
                let mut handed_over = pods.lock();
                let added = handed_over.values().map(|p| p.added + 1).max().unwrap_or(0);
                let pod = ZdsPod {
                    namespace: info.namespace,
                    name: info.name,
                    netns,
                    added,
                };
                handed_over.insert(add.uid, pod);
                drop(handed_over);
                pods.changed();
            }
            Request::Keep(keep) => {
                if self.snapshot_sent {
                    return Err(protocol(format!(
                        "KeepWorkload {} after the snapshot",
                        keep.uid
                    )));
                }
                self.in_snapshot.insert(keep.uid);
            }
            Request::Del(del) => {
                self.in_snapshot.remove(&del.uid);
                if let Some(pod) = pods.lock().remove(&del.uid) {
                    info!(pod = %format!("{}/{}", pod.namespace, pod.name), uid = %del.uid, "pod removed by the CNI node agent");
                }
                pods.changed();
            }
            Request::SnapshotSent(_) => {
                if self.snapshot_sent {
                    return Err(protocol("a second SnapshotSent".into()));
                }
                self.snapshot_sent = true;
                let in_snapshot = std::mem::take(&mut self.in_snapshot);
                pods.lock().retain(|uid, _| in_snapshot.contains(uid));
                pods.changed();
                pods.set_synced(true);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn request(payload: Request) -> Vec<u8> {
        WorkloadRequest {
            payload: Some(payload),
        }
        .encode_to_vec()
    }

    #[test]
    fn the_snapshot_keeps_what_was_kept_and_drops_the_rest() {
        let pods = ZdsPods::default();
        let netns = Netns::open(std::path::Path::new("/proc/self/ns/net")).expect("own netns");
        for uid in ["a", "b"] {
            pods.lock().insert(
                uid.into(),
                ZdsPod {
                    namespace: "default".into(),
                    name: uid.into(),
                    netns: netns.clone(),
                    added: 0,
                },
            );
        }
        let mut session = Session::default();
        let keep = request(Request::Keep(proto::KeepWorkload { uid: "a".into() }));
        assert_eq!(session.apply(&pods, &keep, Vec::new()), Ok(()));
        assert!(!pods.synced());
        let sent = request(Request::SnapshotSent(proto::SnapshotSent {}));
        assert_eq!(session.apply(&pods, &sent, Vec::new()), Ok(()));
        assert!(pods.synced());
        assert!(pods.netns_of("default", "a").is_some());
        assert!(
            pods.netns_of("default", "b").is_none(),
            "not in the snapshot"
        );
        // After the snapshot, Keep and a second SnapshotSent break the protocol.
        assert!(matches!(
            session.apply(&pods, &keep, Vec::new()),
            Err(Refusal::Protocol(_))
        ));
        assert!(matches!(
            session.apply(&pods, &sent, Vec::new()),
            Err(Refusal::Protocol(_))
        ));
    }

    proptest! {
        /// Whatever arrives, the session answers (accepts or refuses), never panics, and
        /// refuses an Add without exactly one descriptor.
        #[test]
        fn any_bytes_are_answered(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let pods = ZdsPods::default();
            let mut session = Session::default();
            let answer = session.apply(&pods, &bytes, Vec::new());
            if let Ok(WorkloadRequest { payload: Some(Request::Add(_)) }) = WorkloadRequest::decode(bytes.as_slice()) {
                prop_assert!(matches!(answer, Err(Refusal::Protocol(_))));
            }
        }
    }
}
