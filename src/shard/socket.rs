//! The raw socket calls the shard makes itself: a vectored, non-blocking send and a
//! non-blocking receive. Not the waiting: the readiness set and glommio's stream do that.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use crate::ws::queue::MAX_IOVECS;

/// A connection task's socket, lent to the shard's flush pass and readiness set while the
/// connection is open: empty before the upgrade and once the task has taken it back to finish
/// the socket. Four bytes, as a raw fd would be, but never a stale or `-1` descriptor.
#[derive(Default)]
pub(crate) struct LentSocket(Cell<Option<BorrowedFd<'static>>>);

impl LentSocket {
    /// Lends `fd`.
    ///
    /// # Safety
    /// `fd` must stay open until `take_back` is called: the connection task that owns the
    /// socket lends it once open and takes it back before it closes it.
    pub(crate) unsafe fn lend(&self, fd: RawFd) {
        // SAFETY: the caller keeps `fd` open until `take_back`, and every use goes through
        // `get`, which is empty from then on.
        self.0.set(Some(unsafe { BorrowedFd::borrow_raw(fd) }));
    }

    /// Ends the loan: from now on only the connection task uses the socket.
    pub(crate) fn take_back(&self) {
        self.0.set(None);
    }

    /// The socket, while it is lent.
    pub(crate) fn get(&self) -> Option<BorrowedFd<'_>> {
        self.0.get()
    }
}

/// `sendmsg` with every slice at once (at most `MAX_IOVECS`); never blocks and never raises
/// SIGPIPE.
pub(crate) fn send_vectored(fd: BorrowedFd<'_>, slices: &[&[u8]]) -> io::Result<usize> {
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
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if written < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(written as usize)
    }
}

/// `recv` without blocking into `buf`: `Ok(0)` when the peer has closed.
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let (fd, len) = (fd.as_raw_fd(), buf.len());
    // SAFETY: `fd` is open (borrowed); the kernel writes at most `len` bytes into `buf`.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), len, libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
