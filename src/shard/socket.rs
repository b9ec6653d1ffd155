//! The raw socket calls the shard makes itself: a vectored, non-blocking send and a
//! non-blocking receive. Not the waiting: the readiness set and glommio's stream do that.

use std::io;

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
