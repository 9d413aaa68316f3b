//! Network namespaces: a handle on one (a pod's), and sockets and commands inside it.
//!
//! A socket belongs, for its whole life, to the namespace of the thread that created it. So a
//! socket for a pod is made by moving this thread into the pod's namespace, creating the socket,
//! and moving straight back (two `setns` calls, nothing awaited between them); the socket is
//! then used from any thread. That is how one node proxy listens and dials inside every pod
//! without a thread per pod. Commands (`iptables-restore`, `ip`) run on a thread of their own
//! that enters the namespace and forks there, so the child starts inside it.

use std::fmt;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use tokio::net::{TcpListener, TcpSocket};

/// Pending connections a listener made by [`Netns::listen`] queues.
const BACKLOG: u32 = 1024;

/// An open network namespace, cheap to clone. Two handles are equal when they name the same
/// namespace and mark their sockets alike.
#[derive(Clone)]
pub struct Netns {
    inner: Arc<Inner>,
    /// `SO_MARK` set on every socket made here (a capturing proxy's "do not capture me").
    mark: Option<u32>,
}

struct Inner {
    file: File,
    /// Device and inode of the namespace: what identifies it.
    id: (u64, u64),
    /// Where it came from, for messages.
    name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {name}: {source}")]
    Open { name: String, source: io::Error },
    #[error("{name} is not a network namespace ({reason})")]
    NotANetns { name: String, reason: String },
}

impl Netns {
    /// Opens the namespace at `path` (e.g. `/var/run/netns/<name>`, `/proc/<pid>/ns/net`).
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| NetnsError::Open {
            name: name.clone(),
            source,
        })?;
        Netns::from_fd(file.into(), name)
    }

    /// Takes `fd` (e.g. received from another process) if it is a network namespace: a file of
    /// the namespace filesystem that this thread can enter as a network namespace.
    pub fn from_fd(fd: OwnedFd, name: impl Into<String>) -> Result<Netns, NetnsError> {
        let name = name.into();
        let not_a_netns = |reason: String| NetnsError::NotANetns {
            name: name.clone(),
            reason,
        };
        let fs = fstatfs(&fd).map_err(|e| not_a_netns(e.to_string()))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(not_a_netns("not a namespace file".into()));
        }
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| not_a_netns(e.to_string()))?;
        let netns = Netns {
            inner: Arc::new(Inner {
                file,
                id: (meta.dev(), meta.ino()),
                name: name.clone(),
            }),
            mark: None,
        };
        // Another kind of namespace (mount, pid…) is a namespace file too: entering it as a
        // network namespace is what tells.
        netns
            .run(|| Ok(()))
            .map_err(|e| not_a_netns(e.to_string()))?;
        Ok(netns)
    }

    /// The same namespace, its sockets marked with `mark`.
    pub fn with_socket_mark(self, mark: u32) -> Netns {
        Netns {
            mark: Some(mark),
            ..self
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Runs `f` with this thread inside the namespace, and moves it back before returning, also
    /// when `f` panics. `f` must not block: it runs on whatever thread called.
    pub fn run<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let home = File::open("/proc/thread-self/ns/net")?;
        setns(self.inner.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let _back = Return(home);
        f()
    }

    /// A TCP socket of this namespace (marked when the handle says so).
    pub fn tcp_socket(&self, ipv4: bool) -> io::Result<TcpSocket> {
        let socket = self.run(|| {
            if ipv4 {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
        })?;
        if let Some(mark) = self.mark {
            setsockopt(&socket, sockopt::Mark, &mark).map_err(io::Error::from)?;
        }
        Ok(socket)
    }

    /// A listener on `addr` inside the namespace.
    pub fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = self.tcp_socket(addr.is_ipv4())?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    }

    /// Runs `command` to completion inside the namespace, `input` on its standard input
    /// (blocking: call it from a blocking context).
    pub fn output(&self, command: &mut Command, input: &[u8]) -> io::Result<Output> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // The thread ends with the command, so it never needs to move back.
                    setns(self.inner.file.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(io::Error::from)?;
                    let mut child = command
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()?;
                    if let Some(mut stdin) = child.stdin.take() {
                        stdin.write_all(input)?;
                    }
                    child.wait_with_output()
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("command thread panicked")))
        })
    }
}

/// A listener on `addr`: inside `netns` when given, else in this process's own namespace.
pub fn listen_in(netns: Option<&Netns>, addr: SocketAddr) -> io::Result<TcpListener> {
    match netns {
        Some(netns) => netns.listen(addr),
        None => {
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        }
    }
}

/// Moves the thread back to the namespace it came from when dropped.
struct Return(File);

impl Drop for Return {
    fn drop(&mut self) {
        if let Err(e) = setns(self.0.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Every later socket of this thread would land in the wrong namespace.
            panic!("cannot return to this thread's network namespace: {e}");
        }
    }
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id && self.mark == other.mark
    }
}

impl Eq for Netns {}

impl Hash for Netns {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.id.hash(state);
        self.mark.hash(state);
    }
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netns")
            .field("name", &self.inner.name)
            .field("mark", &self.mark)
            .finish()
    }
}
