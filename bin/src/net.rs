//! The HTTP API's glommio plumbing: an executor that reports once it listens, reading one
//! request head, and closing a connection without losing its answer. The library keeps the
//! shards' versions of these to itself (their signatures are glommio's types); what the two
//! share is the public parser, `corecast::http::parse_head`.

use std::future::Future;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt};
use glommio::net::TcpStream;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder};

use corecast::http::{self, HeadParse, HttpError, RequestHead};

/// Handed to an executor's start function: report ready once, with a value for the caller.
pub struct Ready<T>(flume::Sender<anyhow::Result<T>>);

impl<T> Ready<T> {
    /// Ready: `spawn_ready` returns `value`.
    pub fn ok(self, value: T) {
        let _ = self.0.send(Ok(value));
    }

    /// Could not start: `spawn_ready` returns `error`.
    pub fn fail(self, error: anyhow::Error) {
        let _ = self.0.send(Err(error));
    }
}

/// Starts an executor from `builder` running `start`, and returns once `start` has reported
/// ready (with its value) or failed (with its error), or `timeout` passed. An executor that
/// could not start at all (io_uring refused, memlock limit too low) reports that only through
/// its join handle, so that is read too.
pub fn spawn_ready<T, F, Fut>(
    builder: LocalExecutorBuilder,
    timeout: Duration,
    start: F,
) -> anyhow::Result<(ExecutorJoinHandle<()>, T)>
where
    T: Send + 'static,
    F: FnOnce(Ready<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (ready, report) = flume::bounded(1);
    let handle = builder
        .spawn(move || start(Ready(ready)))
        .map_err(|e| anyhow::anyhow!("executor failed to start: {e}"))?;
    match report.recv_timeout(timeout) {
        Ok(Ok(value)) => Ok((handle, value)),
        Ok(Err(error)) => {
            let _ = handle.join();
            Err(error)
        }
        Err(flume::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(e) => Err(anyhow::anyhow!("executor failed to start: {e}")),
            Ok(()) => Err(anyhow::anyhow!("executor ended before it was ready")),
        },
        Err(flume::RecvTimeoutError::Timeout) => {
            Err(anyhow::anyhow!("executor not ready after {timeout:?}"))
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
/// it (the start of a body).
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: usize,
) -> Result<(RequestHead, Vec<u8>), HeadError> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; limit.clamp(1, 1024)];
    loop {
        // Never past `limit` (and one byte more): parse_head answers TooLarge once that much
        // is partial.
        let room = limit.saturating_sub(buf.len()).clamp(1, chunk.len());
        let n = stream
            .read(&mut chunk[..room])
            .await
            .map_err(|_| HeadError::Gone)?;
        if n == 0 {
            return Err(HeadError::Gone);
        }
        buf.extend_from_slice(&chunk[..n]);
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
    // On the heap: a buffer in this future would be carried by every task that awaits it.
    let mut sink = vec![0u8; 4096];
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

    const REQUEST: &[u8] = b"POST /api/broadcast HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn reads_a_head_in_pieces_and_keeps_what_follows() {
        for chunk in [1, 3, 7, 64, 4096] {
            let mut s = Dribble {
                data: REQUEST,
                chunk,
            };
            let (head, read_past) = block_on(read_head(&mut s, 8192)).unwrap();
            assert_eq!(head.path(), "/api/broadcast");
            assert_eq!(head.header("content-length"), Some("4"));
            assert_eq!([&read_past[..], s.data].concat(), b"body", "chunk {chunk}");
        }
    }

    #[test]
    fn a_head_over_the_limit_is_431_and_an_early_end_is_gone() {
        let mut big = b"GET / HTTP/1.1\r\nX-A: ".to_vec();
        big.extend(std::iter::repeat(b'b').take(8000));
        big.extend(b"\r\n\r\n");
        let r = block_on(read_head(&mut Cursor::new(big), 4096));
        assert!(
            matches!(r, Err(HeadError::Http(ref e)) if e.status() == 431),
            "{r:?}"
        );
        let r = block_on(read_head(&mut Cursor::new(&REQUEST[..20]), 4096));
        assert!(matches!(r, Err(HeadError::Gone)), "{r:?}");
    }
}
