//! The raw socket calls the shard makes for its open connections (a vectored, non-blocking
//! send; a non-blocking receive) and the last act of a closed one (the linger). Not the
//! waiting: the readiness set does that.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use futures_lite::future;
use glommio::timer::Timer;

use super::sockets::Hold;
use crate::runtime;
use crate::ws::queue::MAX_IOVECS;

/// `sendmsg` with every slice at once (at most `MAX_IOVECS`); never blocks and never raises
/// SIGPIPE.
pub(crate) fn send_vectored(fd: i32, slices: &[&[u8]]) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOVECS];
    for (v, s) in iov.iter_mut().zip(slices) {
        v.iov_base = s.as_ptr() as *mut libc::c_void;
        v.iov_len = s.len();
    }
    // SAFETY: a zeroed msghdr is valid; it points at `iov`, whose entries point at slices that
    // outlive the call, and the kernel only reads them.
    let written = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = slices.len().min(MAX_IOVECS) as _;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if written < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(written as usize)
    }
}

/// `recv` without blocking into `buf`: `Ok(0)` when the peer has closed.
pub(crate) fn recv(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Ends a torn-down connection's socket: writes what it still had queued (its close frame)
/// by `deadline`, then half-closes and reads until the peer closes too, so the peer reads that
/// frame rather than a reset; past the deadline the socket is just closed. Runs as its own
/// task, which only closing connections have.
pub(crate) async fn linger(fd: RawFd, unwritten: Vec<u8>, deadline: Instant, hold: Hold) {
    use futures_lite::AsyncWriteExt;
    use std::os::fd::FromRawFd;
    // SAFETY: the connection handed over `fd` and no longer uses it: the stream owns it now.
    let mut stream = unsafe { glommio::net::TcpStream::from_raw_fd(fd) };
    let wait = deadline.saturating_duration_since(Instant::now());
    future::or(
        async {
            if stream.write_all(&unwritten).await.is_ok() {
                runtime::drain_and_close(&mut stream).await;
            }
        },
        async {
            Timer::new(wait).await;
        },
    )
    .await;
    let _ = stream.close().await;
    drop(hold);
}

/// Closes `fd` now.
pub(crate) fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and does not use it afterwards.
    unsafe {
        libc::close(fd);
    }
}
