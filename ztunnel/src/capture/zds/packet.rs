//! A Unix `SOCK_SEQPACKET` socket on tokio, as ZDS uses it: each message one datagram, a
//! network namespace passed along as a file descriptor (`SCM_RIGHTS`). rustix hands received
//! descriptors over as `OwnedFd`, so nothing here needs `unsafe`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The largest message either side sends or takes (istio-cni's and Istio's ztunnel's buffer).
pub const MAX_MESSAGE: usize = 1024;

/// One received message.
#[derive(Debug)]
pub struct Packet {
    pub data: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// A connected SEQPACKET socket.
#[derive(Debug)]
pub struct SeqPacket {
    fd: AsyncFd<OwnedFd>,
}

impl SeqPacket {
    pub fn connect(path: &Path) -> io::Result<SeqPacket> {
        let fd = socket(SocketFlags::empty())?;
        rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
        rustix::io::ioctl_fionbio(&fd, true)?;
        Ok(SeqPacket { fd: register(fd)? })
    }

    /// Sends one message, with `fd` attached when given.
    pub async fn send(&self, data: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |socket| {
                let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !fds.is_empty() {
                    control.push(SendAncillaryMessage::ScmRights(&fds));
                }
                let iov = [IoSlice::new(data)];
                let sent = rustix::net::sendmsg(socket, &iov, &mut control, SendFlags::NOSIGNAL)?;
                if sent != data.len() {
                    return Err(io::Error::other("message sent in part"));
                }
                Ok(())
            })
            .await
    }

    /// Receives one message; `None` when the peer closed. A message or its descriptors cut
    /// short (larger than [`MAX_MESSAGE`], more than one descriptor) is an error.
    pub async fn recv(&self) -> io::Result<Option<Packet>> {
        self.fd
            .async_io(Interest::READABLE, |socket| {
                let mut buf = [0u8; MAX_MESSAGE];
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let flags = RecvFlags::CMSG_CLOEXEC;
                let msg = rustix::net::recvmsg(socket, &mut iov, &mut control, flags)?;
                let mut fds = Vec::new();
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = message {
                        fds.extend(received);
                    }
                }
                if msg
                    .flags
                    .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("message or descriptors larger than {MAX_MESSAGE} bytes / one fd"),
                    ));
                }
                if msg.bytes == 0 && fds.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Packet {
                    data: buf[..msg.bytes].to_vec(),
                    fds,
                }))
            })
            .await
    }
}

/// A listening SEQPACKET socket: the node agent's side (and a test's).
#[derive(Debug)]
pub struct SeqPacketListener {
    fd: AsyncFd<OwnedFd>,
}

impl SeqPacketListener {
    /// Listens at `path`, replacing a socket file left there.
    pub fn bind(path: &Path) -> io::Result<SeqPacketListener> {
        let _ = std::fs::remove_file(path);
        let fd = socket(SocketFlags::NONBLOCK)?;
        rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
        rustix::net::listen(&fd, 16)?;
        Ok(SeqPacketListener { fd: register(fd)? })
    }

    pub async fn accept(&self) -> io::Result<SeqPacket> {
        let fd = self
            .fd
            .async_io(Interest::READABLE, |socket| {
                let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
                Ok(rustix::net::accept_with(socket, flags)?)
            })
            .await?;
        Ok(SeqPacket { fd: register(fd)? })
    }
}

impl AsFd for SeqPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

fn socket(flags: SocketFlags) -> io::Result<OwnedFd> {
    let flags = flags | SocketFlags::CLOEXEC;
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        flags,
        None,
    )?)
}

/// Registers `fd` with tokio's reactor. `AsyncFd::new` is deprecated because it accepts a
/// value that does not own its descriptor, which could then be closed (and the number reused)
/// while registered. An `OwnedFd` moved in is owned by the `AsyncFd` and closed only after it
/// is deregistered: the sound case. (The replacement, `AsyncFd::register`, is `unsafe`, which
/// this workspace forbids.)
#[allow(deprecated)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd)
}
