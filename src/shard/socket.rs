//! The raw socket calls the shard makes itself: a vectored, non-blocking send (with short
//! frames gathered into one buffer first) and a non-blocking receive. Not the waiting: the
//! readiness set and glommio's stream do that.

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

/// Slices shorter than this are copied into the shard's gather buffer before a write; longer
/// ones go to the kernel as they are, where copying them twice would cost more than their
/// iovec does.
pub(crate) const GATHER_BELOW: usize = 2048;

/// Size of the shard's gather buffer: 64 iovecs of a kilobyte each fit.
pub(crate) const GATHER: usize = 64 << 10;

/// Rewrites `slices` for one write with fewer iovecs: each run of slices shorter than
/// `GATHER_BELOW` is copied, while `buf` has room, into one region of `buf`; the others are
/// kept as they are. Fills `out` (at least as long as `slices`) and returns how many it filled.
///
/// Why: the kernel's copy of a `sendmsg` pays per iovec. Writes of about 32 chat messages of
/// 100 bytes, one iovec per frame, put 11.5% of the server's CPU in `_copy_from_iter` (the
/// floor, writing one buffer, 2.4%); gathered, 1.7% there and 3% here.
pub(crate) fn gather<'a>(slices: &[&'a [u8]], buf: &'a mut [u8], out: &mut [&'a [u8]]) -> usize {
    /// A region of `buf`, or the index of a slice kept as it is.
    #[derive(Clone, Copy)]
    enum Piece {
        Copied(usize, usize),
        Kept(usize),
    }
    let mut pieces = [Piece::Kept(0); MAX_IOVECS];
    let (mut n, mut used) = (0usize, 0usize);
    for (i, s) in slices.iter().enumerate().take(MAX_IOVECS) {
        let end = used + s.len();
        if s.len() < GATHER_BELOW && end <= buf.len() {
            buf[used..end].copy_from_slice(s);
            match n.checked_sub(1).map(|last| &mut pieces[last]) {
                Some(Piece::Copied(_, run_end)) if *run_end == used => *run_end = end,
                _ => {
                    pieces[n] = Piece::Copied(used, end);
                    n += 1;
                }
            }
            used = end;
        } else {
            pieces[n] = Piece::Kept(i);
            n += 1;
        }
    }
    let buf: &'a [u8] = buf;
    for (o, p) in out.iter_mut().zip(&pieces[..n]) {
        *o = match *p {
            Piece::Copied(start, end) => &buf[start..end],
            Piece::Kept(i) => slices[i],
        };
    }
    n
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered<'a>(slices: &[&'a [u8]], buf: &'a mut [u8]) -> Vec<&'a [u8]> {
        let mut out: [&[u8]; MAX_IOVECS] = [&[]; MAX_IOVECS];
        let n = gather(slices, buf, &mut out);
        out[..n].to_vec()
    }

    #[test]
    fn short_slices_become_one_region() {
        let mut buf = [0u8; 16];
        let out = gathered(&[b"ab", b"c", b"", b"def"], &mut buf);
        assert_eq!(out, [&b"abcdef"[..]]);
    }

    #[test]
    fn a_long_slice_is_kept_between_two_runs() {
        let long = vec![7u8; GATHER_BELOW];
        let mut buf = [0u8; 16];
        let out = gathered(&[b"ab", &long, b"cd", b"e"], &mut buf);
        assert_eq!(out, [&b"ab"[..], &long[..], &b"cde"[..]]);
    }

    #[test]
    fn what_does_not_fit_is_kept_and_the_bytes_keep_their_order() {
        let mut buf = [0u8; 4];
        let out = gathered(&[b"abc", b"de", b"f"], &mut buf);
        // "de" does not fit after "abc"; "f" does, in a run of its own after it.
        assert_eq!(out, [&b"abc"[..], &b"de"[..], &b"f"[..]]);
        assert_eq!(out.concat(), b"abcdef");
    }

    #[test]
    fn nothing_in_nothing_out() {
        let mut buf = [0u8; 4];
        assert!(gathered(&[], &mut buf).is_empty());
    }
}
