//! A connection's socket as its task holds it: bare on its own descriptor (the shard reads
//! and writes it through the readiness set and the flush pass), freshly accepted or closing
//! (`Transport::Fresh`: plain calls, into glommio's stream only to wait), in glommio's stream,
//! or TLS. Not what is read or written (`io`, `conn`) nor the raw calls (`socket`).

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;

use super::socket;

/// An open connection's socket as its task holds it.
pub(super) enum OpenSocket {
    /// A plain socket on its own: the shard reads it through its epoll set and writes it in the
    /// flush pass, so nothing of glommio's is kept for it. glommio's stream arms a read-readiness
    /// poll when it is built, which an open connection never uses: ~500 bytes of heap per idle
    /// connection, and an io_uring poll that every cancel the reactor makes then searches past.
    Bare(OwnedFd),
    /// In glommio's stream: a TLS connection; a plain one whose socket was full once (glommio
    /// waits for room), or that `bare` could not take out. Boxed, so that the task of a bare
    /// one does not carry a stream's room.
    Stream(Box<Transport>),
}

impl OpenSocket {
    /// A plain socket on its own descriptor: a fresh one as it is, one in glommio's stream
    /// taken out onto a new descriptor (the stream cannot give its own up), or left in the
    /// stream when the descriptor table is full. TLS stays in its stream.
    pub(super) fn bare(stream: Transport) -> OpenSocket {
        let tcp = match stream {
            Transport::Fresh(fd) => return OpenSocket::Bare(fd),
            Transport::Plain(tcp) => tcp,
            tls @ Transport::Tls(_) => return OpenSocket::Stream(Box::new(tls)),
        };
        // SAFETY: `tcp` owns the descriptor and outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
        match fd.try_clone_to_owned() {
            Ok(bare) => OpenSocket::Bare(bare),
            Err(_) => OpenSocket::Stream(Box::new(Transport::Plain(tcp))),
        }
    }

    /// TLS: only the task reads and writes it.
    pub(super) fn is_tls(&self) -> bool {
        matches!(self, OpenSocket::Stream(t) if matches!(**t, Transport::Tls(_)))
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        match self {
            OpenSocket::Bare(fd) => fd.as_raw_fd(),
            OpenSocket::Stream(t) => t.raw_fd(),
        }
    }

    /// As a transport, on the same descriptor: to wait for room, or to close. A bare socket
    /// goes into glommio's stream only once it has to wait (`Transport::Fresh`).
    pub(super) fn into_transport(self) -> Transport {
        match self {
            OpenSocket::Bare(fd) => Transport::Fresh(fd),
            OpenSocket::Stream(t) => *t,
        }
    }
}

/// A connection's socket: plain TCP, which the shard reads and writes itself on the raw fd
/// once the connection is open, or TLS, which only this task reads and writes.
pub(super) enum Transport {
    /// A plain socket on its own descriptor, as accepted or as a closing connection's: read
    /// and written with plain non-blocking calls, it moves into glommio's stream (`Plain`)
    /// only when it has to wait (the request is not all in, the answer does not fit, the peer
    /// has yet to close). An upgrade that arrives whole, as nearly all do, never builds a
    /// stream: no io_uring poll armed and cancelled, no copy of the descriptor to take the
    /// socket back out; nor does a close the peer began (`finish`).
    Fresh(OwnedFd),
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this {
            Transport::Fresh(fd) => match socket::recv(fd.as_fd(), buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    Pin::new(this.waitable()).poll_read(cx, buf)
                }
                done => Poll::Ready(done),
            },
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this {
            Transport::Fresh(fd) => match socket::send_vectored(fd.as_fd(), &[buf]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    Pin::new(this.waitable()).poll_write(cx, buf)
                }
                done => Poll::Ready(done),
            },
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            // Nothing is buffered: each write went to the kernel.
            Transport::Fresh(_) => Poll::Ready(Ok(())),
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Fresh(fd) => {
                Poll::Ready(socket2::SockRef::from(&*fd).shutdown(Shutdown::Write))
            }
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}

impl Transport {
    pub(super) fn raw_fd(&self) -> RawFd {
        match self {
            Transport::Fresh(fd) => fd.as_raw_fd(),
            Transport::Plain(s) => s.as_raw_fd(),
            Transport::Tls(s) => s.get_ref().0.as_raw_fd(),
        }
    }

    /// Moves a `Fresh` socket into glommio's stream, to wait on it; the others as they are.
    pub(super) fn waitable(&mut self) -> &mut Transport {
        if let Transport::Fresh(fd) = self {
            // SAFETY: `fd` is an open TCP socket; the stream takes it over, and the `OwnedFd`
            // that held it is let go of below without closing it.
            let tcp = unsafe { TcpStream::from_raw_fd(fd.as_raw_fd()) };
            if let Transport::Fresh(fd) = std::mem::replace(self, Transport::Plain(tcp)) {
                let _ = fd.into_raw_fd();
            }
        }
        self
    }

    /// A plain socket on its own descriptor with nothing left to read, or at its end: closing
    /// it sends the peer a FIN after what was written, not a reset. Reads (and drops) what is
    /// there; false for any other socket, which waits for the peer's end instead.
    pub(super) fn nothing_unread(&self) -> bool {
        let Transport::Fresh(fd) = self else {
            return false;
        };
        let mut byte = [0u8; 1];
        match socket::recv(fd.as_fd(), &mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }

    /// Shuts the socket down in `how`.
    pub(super) async fn shutdown(&self, how: Shutdown) {
        match self {
            Transport::Fresh(fd) => drop(socket2::SockRef::from(fd).shutdown(how)),
            Transport::Plain(s) => drop(s.shutdown(how).await),
            Transport::Tls(s) => drop(s.get_ref().0.shutdown(how).await),
        }
    }

    /// Sends what is left to send (a TLS close_notify too) and half-closes.
    pub(super) async fn shutdown_write(&mut self) {
        if let Transport::Tls(s) = self {
            s.get_mut().1.send_close_notify();
            let _ = s.flush().await;
        }
        self.shutdown(Shutdown::Write).await;
    }
}
