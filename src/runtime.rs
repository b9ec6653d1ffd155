//! glommio plumbing that the shards and the `corecast` binary's HTTP API share: starting an
//! executor that reports when it is ready, reading an HTTP request head from a stream, and
//! ending a connection without losing the last answer. Not protocol decisions: those are in
//! `http` and `ws`.
//!
//! Public for front ends that serve their own plain-HTTP endpoints on glommio beside the
//! server, as the binary's HTTP API does: one implementation of these for both, rather than a
//! copy in each. Its signatures use glommio's types, so it follows glommio's releases.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt};
use glommio::net::TcpStream;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder};

use crate::http::{self, HeadParse, HttpError, RequestHead};
use crate::Error;

/// Handed to an executor's start function: report ready once, with a value for the caller.
pub struct Ready<T>(flume::Sender<Result<T, Error>>);

impl<T> Ready<T> {
    /// Ready: `spawn_ready` returns `value`.
    pub fn ok(self, value: T) {
        let _ = self.0.send(Ok(value));
    }

    /// Could not start: `spawn_ready` returns `error`.
    pub fn fail(self, error: Error) {
        let _ = self.0.send(Err(error));
    }
}

/// Starts an executor from `builder` running `start`, and returns once `start` has reported
/// ready (with its value) or failed (with its error), or `timeout` passed. An executor that
/// could not start at all (io_uring refused, memlock limit too low) reports that only through
/// its join handle, so that is read too, as `Error::Executor`.
pub fn spawn_ready<T, F, Fut>(
    builder: LocalExecutorBuilder,
    timeout: Duration,
    start: F,
) -> Result<(ExecutorJoinHandle<()>, T), Error>
where
    T: Send + 'static,
    F: FnOnce(Ready<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (ready, report) = flume::bounded(1);
    let handle = builder
        .spawn(move || start(Ready(ready)))
        .map_err(|e| Error::Executor(e.to_string()))?;
    match report.recv_timeout(timeout) {
        Ok(Ok(value)) => Ok((handle, value)),
        Ok(Err(error)) => {
            let _ = handle.join();
            Err(error)
        }
        Err(flume::RecvTimeoutError::Disconnected) => Err(Error::Executor(match handle.join() {
            Err(e) => e.to_string(),
            Ok(()) => "executor ended before it was ready".into(),
        })),
        Err(flume::RecvTimeoutError::Timeout) => {
            Err(Error::Executor(format!("not ready after {timeout:?}")))
        }
    }
}

/// Why no request head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed or the read failed before a whole head: nobody to answer.
    Gone,
    /// The bytes are not a request head we take: answer with `HttpError::status()`.
    Http(HttpError),
}

/// Reads one HTTP request head of at most `limit` bytes. Returns it with the bytes read past
/// it (the start of a body, or of the first WebSocket frame).
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: usize,
) -> Result<(RequestHead, Vec<u8>), HeadError> {
    let scratch = RefCell::new(vec![0u8; limit.clamp(1, 1024)].into_boxed_slice());
    read_head_with(stream, limit, &scratch).await
}

/// `read_head` reading through `scratch`, a buffer the caller shares between its connections
/// (borrowed only while a read copies out of it, never across an await). A connection keeps
/// only the bytes that arrived, so one that trickles its head in a byte at a time holds a few
/// bytes until its handshake timeout, not a read buffer.
pub async fn read_head_with<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: usize,
    scratch: &RefCell<Box<[u8]>>,
) -> Result<(RequestHead, Vec<u8>), HeadError> {
    let mut buf = Vec::new();
    loop {
        // Never past `limit` (and one byte more): parse_head answers TooLarge once that much
        // is partial.
        let room = limit.saturating_sub(buf.len()).max(1);
        let n = poll_fn(|cx| {
            let mut scratch = scratch.borrow_mut();
            let len = room.min(scratch.len()).max(1);
            let Some(into) = scratch.get_mut(..len) else {
                return Poll::Ready(Err(io::ErrorKind::InvalidInput.into()));
            };
            let read = Pin::new(&mut *stream).poll_read(cx, into);
            if let Poll::Ready(Ok(n)) = read {
                buf.extend_from_slice(into.get(..n).unwrap_or_default());
            }
            read
        })
        .await
        .map_err(|_| HeadError::Gone)?;
        if n == 0 {
            return Err(HeadError::Gone);
        }
        match http::parse_head(&buf, limit) {
            Ok(HeadParse::Complete { head, consumed }) => {
                return Ok((head, buf.split_off(consumed)))
            }
            Ok(HeadParse::Partial) => {}
            Err(e) => return Err(HeadError::Http(e)),
        }
    }
}

/// Ends a connection whose last bytes are written: half-closes, then reads and discards until
/// the peer closes too, so the peer reads those bytes rather than a reset (closing a socket
/// with unread input sends RST). Bound it with a timeout: a peer may never close.
pub async fn drain_and_close(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    drain(stream).await;
}

/// The buffer `drain` reads into and discards.
const DRAIN_BUFFER: usize = 256;

/// Reads and discards until the peer ends the stream (or it fails): the second half of
/// `drain_and_close`, for a stream already half-closed. Bound it with a timeout.
pub async fn drain<S: AsyncRead + Unpin>(stream: &mut S) {
    // On the heap: a buffer in this future would be carried by every task that can call it.
    // Small: what a closing peer still sends is a close frame or the tail of a message, and
    // every connection of a mass close (a shutdown) holds one until its peer closes.
    let mut sink = vec![0u8; DRAIN_BUFFER];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::io::Cursor;

    /// A reader that hands out `chunk` bytes per read, like a slow socket.
    struct Dribble<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl AsyncRead for Dribble<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = self.chunk.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            std::task::Poll::Ready(Ok(n))
        }
    }

    const REQUEST: &[u8] = b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\nrest";

    #[test]
    fn reads_a_head_in_pieces_and_keeps_what_follows() {
        for chunk in [1, 3, 7, 64, 4096] {
            let mut s = Dribble {
                data: REQUEST,
                chunk,
            };
            let (head, read_past) = block_on(read_head(&mut s, 8192)).unwrap();
            assert_eq!(head.path(), "/ws");
            assert_eq!(head.header("upgrade"), Some("websocket"));
            // What was read past the head comes back; the rest is still in the stream.
            assert_eq!([&read_past[..], s.data].concat(), b"rest", "chunk {chunk}");
        }
    }

    #[test]
    fn a_shared_scratch_of_any_size_reads_the_same() {
        for size in [1, 5, 4096] {
            let scratch = RefCell::new(vec![0u8; size].into_boxed_slice());
            let mut s = Dribble {
                data: REQUEST,
                chunk: 4096,
            };
            let (head, read_past) = block_on(read_head_with(&mut s, 8192, &scratch)).unwrap();
            assert_eq!(head.path(), "/ws");
            assert_eq!([&read_past[..], s.data].concat(), b"rest", "scratch {size}");
        }
    }

    #[test]
    fn drain_reads_to_the_end_whatever_the_peer_still_sends() {
        // More than the small buffer holds, in pieces and at once.
        let tail = vec![7u8; 10 * DRAIN_BUFFER + 3];
        for chunk in [1, 100, DRAIN_BUFFER, 4096] {
            let mut s = Dribble { data: &tail, chunk };
            block_on(drain(&mut s));
            assert!(s.data.is_empty(), "chunk {chunk}: {} left", s.data.len());
        }
    }

    #[test]
    fn a_head_over_the_limit_is_431_and_an_early_end_is_gone() {
        let mut big = b"GET / HTTP/1.1\r\nX-A: ".to_vec();
        big.extend(std::iter::repeat(b'b').take(8000));
        big.extend(b"\r\n\r\n");
        let r = block_on(read_head(&mut Cursor::new(big), 4096));
        assert!(
            matches!(r, Err(HeadError::Http(HttpError::TooLarge))),
            "{r:?}"
        );
        let r = block_on(read_head(&mut Cursor::new(&REQUEST[..20]), 4096));
        assert!(matches!(r, Err(HeadError::Gone)), "{r:?}");
        let r = block_on(read_head(
            &mut Cursor::new(b"\x00\x01garbage\r\n\r\n"),
            4096,
        ));
        assert!(
            matches!(r, Err(HeadError::Http(HttpError::Malformed(_)))),
            "{r:?}"
        );
    }
}
