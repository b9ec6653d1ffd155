//! The shard's one readiness source for its open connections and its listener: an epoll set,
//! drained without blocking and slept on through a single glommio poll when empty. Not the
//! reads, writes and accepts themselves (the connection glue and the listener do those) nor
//! the handshake's waits, which go through glommio's own stream.
//!
//! Why: glommio's stream read arms a fresh one-shot io_uring poll (an allocation, a submission,
//! a completion and a task wake-up) after every read that does not fill the buffer, i.e. after
//! nearly every client message. One epoll set per shard turns that into one `recv` per ready
//! socket and, when the shard runs out of work, one poll for all its sockets.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::pin::Pin;

use futures_lite::AsyncRead;

use crate::registry::ConnId;

/// Events taken from the set in one go.
pub(crate) const BATCH: usize = 256;

pub(crate) struct Readiness {
    epoll: OwnedFd,
}

/// The key the shard's listener carries in the set (`Listener`): no connection's, whose slot
/// would have to be 2^32 - 1.
pub(crate) const LISTENER: u64 = u64::MAX;

/// The key an event carries: the slot, and the low half of the generation (a slot would have to
/// be reused 2^32 times while an event for it is in flight to be mistaken).
pub(crate) fn key_of(id: ConnId) -> u64 {
    ((id.slot as u64) << 32) | (id.generation & 0xffff_ffff)
}

/// The slot a key names.
pub(crate) fn slot_of(key: u64) -> usize {
    (key >> 32) as usize
}

impl Readiness {
    pub(crate) fn new() -> io::Result<Readiness> {
        // SAFETY: plain syscall; the result is checked before it is owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Readiness { epoll })
    }

    /// Reports `fd` as ready while it has bytes to read or the peer has closed
    /// (level-triggered: one `recv` per report, the next report if more is left).
    pub(crate) fn watch(&self, fd: BorrowedFd<'_>, key: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: key,
        };
        let (epoll, fd) = (self.epoll.as_raw_fd(), fd.as_raw_fd());
        // SAFETY: both descriptors are open (owned and borrowed); the kernel copies `event`.
        let rc = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops reporting `fd` (before the connection lets go of it).
    pub(crate) fn unwatch(&self, fd: BorrowedFd<'_>) {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        let (epoll, fd) = (self.epoll.as_raw_fd(), fd.as_raw_fd());
        // SAFETY: as in `watch`; a descriptor not in the set only yields ENOENT.
        unsafe {
            libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, &mut event);
        }
    }

    /// Takes the keys of the sockets ready now, without waiting; returns how many it wrote.
    pub(crate) fn ready(&self, keys: &mut [u64; BATCH]) -> usize {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        // SAFETY: `events` has room for BATCH entries; a zero timeout never blocks.
        let n = unsafe {
            libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), BATCH as i32, 0)
        };
        let n = usize::try_from(n).unwrap_or(0);
        for (key, event) in keys.iter_mut().zip(&events[..n]) {
            *key = event.u64;
        }
        n
    }

    /// Resolves once a watched socket may be ready (callers check with `ready`).
    ///
    /// glommio 0.9 has no public way to await an arbitrary descriptor, but a glommio stream
    /// arms a readiness poll on its descriptor when it is built, which is exactly the one poll
    /// wanted here. It is built over a duplicate of the epoll descriptor, so dropping it closes
    /// only the duplicate; its read then fails (an epoll set is not a socket), which is the
    /// signal that the set became readable.
    pub(crate) async fn wait(&self) -> io::Result<()> {
        // SAFETY: plain syscall; the result is checked before it is owned.
        let dup = unsafe { libc::dup(self.epoll.as_raw_fd()) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` is a new descriptor that the stream owns from here on.
        let mut waiter = unsafe { glommio::net::TcpStream::from_raw_fd(dup) };
        let mut byte = [0u8; 1];
        let _ = poll_fn(|cx| Pin::new(&mut waiter).poll_read(cx, &mut byte)).await;
        Ok(())
    }
}
