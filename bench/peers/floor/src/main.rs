//! `floor-peer`: the kernel's floor in the corecast benchmarks. One thread, one epoll set:
//! each pass reads every ready socket once, finds client frames by their length and mask only,
//! gathers the server bytes of the whole pass (one shared log for a broadcast, one buffer per
//! topic, one per connection for its own answers) and then gives each socket one
//! `write`/`writev`. A broadcast pass looks for new messages every 64 writes, so the sockets
//! later in the pass take them in the same write: nothing waits, and no write is spent on
//! bytes that could have gone with the next.
//! Usage: floor-peer <relay|echo|shootout|pubsub> <port> (port 0: any; the first line on
//! stdout names it). Binds 127.0.0.1 only.
//! Not a WebSocket server: no UTF-8 checks, fragments, extensions, pings of its own, timeouts
//! or limits beyond a 64 MiB backlog per socket; what a scenario needs and nothing else.

mod wire;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::fd::{IntoRawFd as _, RawFd};

use anyhow::{bail, Context as _};
use wire::{Frame, Pubsub, Shootout};

/// What the server does with client messages, as corecast's `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every message to every connection, its sender included.
    Relay,
    /// Every message back to its sender.
    Echo,
    /// websocket-shootout: `echo` back, `broadcast` to all and a result to the sender.
    Shootout,
    /// corecast's pubsub subset: `?topics=`, subscribe, unsubscribe, publish.
    Pubsub,
}

/// The epoll token of the listener; connections are their slab index.
const LISTENER: u64 = u64::MAX;
/// Bytes a socket may owe before it is dropped: the floor has no slow-consumer policy.
const MAX_BACKLOG: usize = 64 << 20;
/// A request head larger than this is refused.
const MAX_HEAD: usize = 8192;
/// One read per ready socket per pass takes at most this much.
const READ_BUF: usize = 256 << 10;

struct Conn {
    fd: RawFd,
    upgraded: bool,
    /// Written this pass, set when it has bytes of its own or topics to write.
    dirty: bool,
    /// Whether EPOLLOUT is registered (while `backlog` holds bytes).
    waiting: bool,
    /// An unfinished request head or frame, kept between reads (empty most of the time).
    partial: Vec<u8>,
    /// Its own answers this pass: the 101, acknowledgements, echoes, pongs.
    own: Vec<u8>,
    /// What the kernel would not take yet; everything later queues behind it.
    backlog: Vec<u8>,
    /// Pubsub: its topics, and those with bytes for it this pass.
    topics: Vec<u32>,
    pending: Vec<u32>,
    /// Relay and shootout: how far into the broadcast log it has been given (log offsets).
    sent: u64,
}

struct Topic {
    subscribers: Vec<usize>,
    /// This pass's frames to the topic.
    batch: Vec<u8>,
}

struct Floor {
    mode: Mode,
    epoll: RawFd,
    listener: RawFd,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections with something to write this pass (may repeat; `Conn::dirty` decides).
    dirty: Vec<usize>,
    /// Relay and shootout: the frames to everyone that some connection has yet to be given;
    /// `log[0]` is at offset `log_base` of the whole broadcast stream.
    log: Vec<u8>,
    log_base: u64,
    topic_ids: HashMap<Vec<u8>, u32>,
    topics: Vec<Topic>,
    dirty_topics: Vec<u32>,
    read_buf: Vec<u8>,
    /// A pubsub payload, unmasked to be read.
    scratch: Vec<u8>,
    /// Room for the events of one wait.
    events: Vec<libc::epoll_event>,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn epoll_set(epoll: RawFd, op: i32, fd: RawFd, events: u32, token: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` lives across the call; epoll_ctl only reads it.
    if unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const READABLE: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
const WRITABLE: u32 = READABLE | libc::EPOLLOUT as u32;

impl Floor {
    fn new(mode: Mode, listener: RawFd) -> anyhow::Result<Floor> {
        // SAFETY: plain syscall; the result is checked.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_create1");
        }
        epoll_set(
            epoll,
            libc::EPOLL_CTL_ADD,
            listener,
            libc::EPOLLIN as u32,
            LISTENER,
        )
        .context("watching the listener")?;
        Ok(Floor {
            mode,
            epoll,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            log: Vec::new(),
            log_base: 0,
            topic_ids: HashMap::new(),
            topics: Vec::new(),
            dirty_topics: Vec::new(),
            read_buf: vec![0; READ_BUF],
            scratch: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        })
    }

    fn run(&mut self) -> anyhow::Result<()> {
        loop {
            // Connections behind on the broadcast log are written at once, without sleeping.
            let timeout = if self.log.is_empty() { -1 } else { 0 };
            self.poll(timeout)?;
            self.flush();
        }
    }

    /// One `epoll_wait` and what it reports: accepts, backlog writes, reads.
    fn poll(&mut self, timeout: i32) -> anyhow::Result<()> {
        let mut events = std::mem::take(&mut self.events);
        // SAFETY: `events` has room for the count passed.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll,
                events.as_mut_ptr(),
                events.len() as i32,
                timeout,
            )
        };
        if n < 0 {
            self.events = events;
            if errno() == libc::EINTR {
                return Ok(());
            }
            return Err(std::io::Error::last_os_error()).context("epoll_wait");
        }
        for ev in &events[..n as usize] {
            let (token, flags) = (ev.u64, ev.events);
            if token == LISTENER {
                self.accept_all();
                continue;
            }
            let idx = token as usize;
            if flags & libc::EPOLLOUT as u32 != 0 {
                self.drain_backlog(idx);
            }
            if flags & !(libc::EPOLLOUT as u32) != 0 {
                self.read(idx);
            }
        }
        self.events = events;
        Ok(())
    }

    fn accept_all(&mut self) {
        loop {
            // SAFETY: null address arguments are allowed; the result is checked.
            let fd = unsafe {
                libc::accept4(
                    self.listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                // EAGAIN: all taken. EMFILE and the like: the next pass tries again.
                return;
            }
            let one: libc::c_int = 1;
            // SAFETY: `one` outlives the call, its size is passed.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            let conn = Conn {
                fd,
                upgraded: false,
                dirty: false,
                waiting: false,
                partial: Vec::new(),
                own: Vec::new(),
                backlog: Vec::new(),
                topics: Vec::new(),
                pending: Vec::new(),
                sent: 0,
            };
            let idx = match self.free.pop() {
                Some(i) => {
                    self.conns[i] = Some(conn);
                    i
                }
                None => {
                    self.conns.push(Some(conn));
                    self.conns.len() - 1
                }
            };
            if epoll_set(self.epoll, libc::EPOLL_CTL_ADD, fd, READABLE, idx as u64).is_err() {
                self.close(idx);
            }
        }
    }

    fn close(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        for t in conn.topics {
            self.topics[t as usize].subscribers.retain(|&s| s != idx);
        }
        // SAFETY: the fd is ours and closed once: its slot is now empty.
        unsafe { libc::close(conn.fd) };
        self.free.push(idx);
    }

    fn conn(&mut self, idx: usize) -> Option<&mut Conn> {
        self.conns.get_mut(idx).and_then(Option::as_mut)
    }

    fn mark_dirty(&mut self, idx: usize) {
        if let Some(c) = self.conn(idx) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// One read; the bytes are taken as far as they make whole frames (or a whole head).
    fn read(&mut self, idx: usize) {
        let Some(fd) = self.conn(idx).map(|c| c.fd) else {
            return;
        };
        let mut buf = std::mem::take(&mut self.read_buf);
        // SAFETY: `buf` has `buf.len()` writable bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            let again = n < 0 && matches!(errno(), libc::EAGAIN | libc::EINTR);
            self.read_buf = buf;
            if !again {
                self.close(idx);
            }
            return;
        }
        let n = n as usize;
        let mut partial = self
            .conn(idx)
            .map(|c| std::mem::take(&mut c.partial))
            .unwrap_or_default();
        let ok = if partial.is_empty() {
            self.take(idx, &buf[..n], &mut partial)
        } else {
            partial.extend_from_slice(&buf[..n]);
            let input = std::mem::take(&mut partial);
            self.take(idx, &input, &mut partial)
        };
        self.read_buf = buf;
        match self.conn(idx) {
            Some(c) if ok => c.partial = partial,
            Some(_) => self.close(idx),
            None => {}
        }
    }

    /// Takes `input`: the head if not upgraded yet, then whole frames; what is left of an
    /// unfinished one goes to `rest`. `false`: close the connection.
    fn take(&mut self, idx: usize, input: &[u8], rest: &mut Vec<u8>) -> bool {
        let mut at = 0;
        if !self.conn(idx).is_some_and(|c| c.upgraded) {
            let Some(end) = wire::head_end(input) else {
                rest.extend_from_slice(input);
                return input.len() <= MAX_HEAD;
            };
            if !self.upgrade(idx, &input[..end]) {
                return false;
            }
            at = end;
        }
        while at < input.len() {
            match wire::client_frame(&input[at..]) {
                Frame::Incomplete => break,
                Frame::Refused(_) => return false,
                Frame::Whole {
                    opcode,
                    mask,
                    at: start,
                    len,
                } => {
                    let payload = &input[at + start..at + start + len];
                    at += start + len;
                    if !self.frame(idx, opcode, payload, mask) {
                        return false;
                    }
                }
            }
        }
        rest.extend_from_slice(&input[at..]);
        true
    }

    /// Answers the head with a 101 (and, for pubsub, its topics' acknowledgements).
    fn upgrade(&mut self, idx: usize, head: &[u8]) -> bool {
        let Some(up) = wire::parse_upgrade(head) else {
            if let Some(c) = self.conn(idx) {
                let refusal = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
                // SAFETY: the bytes are valid for the call. Best effort: it is closed next.
                unsafe { libc::write(c.fd, refusal.as_ptr().cast(), refusal.len()) };
            }
            return false;
        };
        let answer = wire::switching_protocols(up.key);
        let topics: Vec<Vec<u8>> = if self.mode == Mode::Pubsub {
            wire::query_topics(up.path).map(<[u8]>::to_vec).collect()
        } else {
            Vec::new()
        };
        let end = self.log_base + self.log.len() as u64;
        if let Some(c) = self.conn(idx) {
            c.upgraded = true;
            c.own.extend_from_slice(&answer);
            // Broadcasts from now on.
            c.sent = end;
        }
        for t in topics {
            self.subscribe(idx, &t);
        }
        // Written now rather than with the pass, so that an idle connection keeps no buffer.
        let epoll = self.epoll;
        let Some(c) = self.conn(idx) else {
            return false;
        };
        let own = std::mem::take(&mut c.own);
        c.dirty = false;
        write(epoll, idx, c, &[&own])
    }

    fn subscribe(&mut self, idx: usize, name: &[u8]) {
        let next = self.topics.len() as u32;
        let t = *self.topic_ids.entry(name.to_vec()).or_insert(next);
        if t == next {
            self.topics.push(Topic {
                subscribers: Vec::new(),
                batch: Vec::new(),
            });
        }
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if !c.topics.contains(&t) {
            c.topics.push(t);
            self.topics[t as usize].subscribers.push(idx);
        }
        wire::push_frame(&mut c.own, wire::OP_TEXT, &wire::ack("subscribed", name));
        self.mark_dirty(idx);
    }

    fn unsubscribe(&mut self, idx: usize, name: &[u8]) {
        let t = self.topic_ids.get(name).copied();
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if let Some(t) = t {
            if let Some(at) = c.topics.iter().position(|&x| x == t) {
                c.topics.swap_remove(at);
                self.topics[t as usize].subscribers.retain(|&s| s != idx);
            }
        }
        wire::push_frame(&mut c.own, wire::OP_TEXT, &wire::ack("unsubscribed", name));
        self.mark_dirty(idx);
    }

    /// One whole client frame. `false`: close the connection.
    fn frame(&mut self, idx: usize, opcode: u8, payload: &[u8], mask: [u8; 4]) -> bool {
        match opcode {
            wire::OP_TEXT | wire::OP_BINARY => {}
            wire::OP_PING => {
                if let Some(c) = self.conn(idx) {
                    wire::push_unmasked_frame(&mut c.own, wire::OP_PONG, payload, mask);
                }
                self.mark_dirty(idx);
                return true;
            }
            wire::OP_PONG => return true,
            wire::OP_CLOSE => {
                // Answer with a close frame after what this connection is owed, then close
                // (RFC 6455 §7.1.1: the server closes first).
                if let Some(c) = self.conn(idx) {
                    wire::push_frame(&mut c.own, wire::OP_CLOSE, &1000u16.to_be_bytes());
                    let (own, fd) = (std::mem::take(&mut c.own), c.fd);
                    if c.backlog.is_empty() {
                        // SAFETY: the bytes are valid for the call. Best effort: it closes.
                        unsafe { libc::write(fd, own.as_ptr().cast(), own.len()) };
                    }
                }
                return false;
            }
            _ => return false,
        }
        match self.mode {
            Mode::Relay => wire::push_unmasked_frame(&mut self.log, opcode, payload, mask),
            Mode::Echo => {
                if let Some(c) = self.conn(idx) {
                    wire::push_unmasked_frame(&mut c.own, opcode, payload, mask);
                }
                self.mark_dirty(idx);
            }
            Mode::Shootout => {
                let mut msg = std::mem::take(&mut self.scratch);
                msg.clear();
                msg.extend_from_slice(payload);
                wire::unmask(&mut msg, mask);
                match wire::shootout(&msg) {
                    Shootout::Echo => {
                        if let Some(c) = self.conn(idx) {
                            wire::push_frame(&mut c.own, opcode, &msg);
                        }
                        self.mark_dirty(idx);
                    }
                    Shootout::Broadcast { rest } => {
                        wire::push_frame(&mut self.log, opcode, &msg);
                        let result = wire::broadcast_result(rest);
                        if let Some(c) = self.conn(idx) {
                            wire::push_frame(&mut c.own, wire::OP_TEXT, &result);
                        }
                        self.mark_dirty(idx);
                    }
                    Shootout::Other => {}
                }
                self.scratch = msg;
            }
            Mode::Pubsub => {
                let mut msg = std::mem::take(&mut self.scratch);
                msg.clear();
                msg.extend_from_slice(payload);
                wire::unmask(&mut msg, mask);
                match wire::pubsub(&msg) {
                    Pubsub::Publish { topic, data } => {
                        if let Some(&t) = self.topic_ids.get(topic) {
                            let entry = &mut self.topics[t as usize];
                            if entry.batch.is_empty() {
                                self.dirty_topics.push(t);
                            }
                            wire::push_frame(&mut entry.batch, wire::OP_TEXT, data);
                        }
                    }
                    Pubsub::Subscribe(t) => self.subscribe(idx, t),
                    Pubsub::Unsubscribe(t) => self.unsubscribe(idx, t),
                    Pubsub::Other => {
                        if let Some(c) = self.conn(idx) {
                            let error =
                                br#"{"error":"expected subscribe, unsubscribe or publish"}"#;
                            wire::push_frame(&mut c.own, wire::OP_TEXT, error);
                        }
                        self.mark_dirty(idx);
                    }
                }
                self.scratch = msg;
            }
        }
        true
    }

    /// The end of a pass: each connection with something owed gets one write of all of it.
    fn flush(&mut self) {
        let epoll = self.epoll;
        let mut dead = Vec::new();
        if !self.log.is_empty() {
            self.flush_log();
        }
        for &t in &self.dirty_topics {
            for &s in &self.topics[t as usize].subscribers {
                if let Some(c) = self.conns.get_mut(s).and_then(Option::as_mut) {
                    c.pending.push(t);
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(s);
                    }
                }
            }
        }
        for &idx in &self.dirty {
            let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            if !c.dirty {
                continue;
            }
            c.dirty = false;
            let mut own = std::mem::take(&mut c.own);
            if c.pending.len() >= MAX_PARTS {
                // Too many topics for one writev: one buffer of them all.
                for &t in &c.pending {
                    own.extend_from_slice(&self.topics[t as usize].batch);
                }
                c.pending.clear();
            }
            let mut parts: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
            parts[0] = &own;
            for (part, &t) in parts[1..].iter_mut().zip(&c.pending) {
                *part = &self.topics[t as usize].batch;
            }
            if !write(epoll, idx, c, &parts[..1 + c.pending.len()]) {
                dead.push(idx);
            }
            c.own = own;
            c.own.clear();
            if c.own.capacity() > 4096 {
                c.own = Vec::new();
            }
            c.pending.clear();
        }
        self.dirty.clear();
        for &t in &self.dirty_topics {
            self.topics[t as usize].batch.clear();
        }
        self.dirty_topics.clear();
        for idx in dead {
            self.close(idx);
        }
    }

    /// Gives every connection what it has yet to get of the broadcast log, one write each,
    /// looking for new messages every `POLL_EVERY` writes; then drops what all have.
    fn flush_log(&mut self) {
        let epoll = self.epoll;
        let mut writes = 0;
        for idx in 0..self.conns.len() {
            if writes == POLL_EVERY {
                writes = 0;
                // A failed look is the next pass's to report.
                let _ = self.poll(0);
            }
            let end = self.log_base + self.log.len() as u64;
            let Some(c) = self.conns[idx].as_mut() else {
                continue;
            };
            if !c.upgraded || c.sent >= end {
                continue;
            }
            let owed = &self.log[(c.sent - self.log_base) as usize..];
            c.sent = end;
            c.dirty = false;
            let own = std::mem::take(&mut c.own);
            let ok = write(epoll, idx, c, &[&own, owed]);
            c.own = own;
            c.own.clear();
            writes += 1;
            if !ok {
                self.close(idx);
            }
        }
        let end = self.log_base + self.log.len() as u64;
        let given = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.upgraded)
            .map(|c| c.sent)
            .min()
            .unwrap_or(end);
        self.log.drain(..(given - self.log_base) as usize);
        self.log_base = given;
    }

    fn drain_backlog(&mut self, idx: usize) {
        let epoll = self.epoll;
        let Some(c) = self.conn(idx) else {
            return;
        };
        if c.backlog.is_empty() {
            return;
        }
        // SAFETY: the backlog's bytes are valid for the call.
        let n = unsafe { libc::write(c.fd, c.backlog.as_ptr().cast(), c.backlog.len()) };
        if n < 0 {
            if !matches!(errno(), libc::EAGAIN | libc::EINTR) {
                self.close(idx);
            }
            return;
        }
        c.backlog.drain(..n as usize);
        if c.backlog.is_empty() {
            c.backlog = Vec::new();
            c.waiting = false;
            if epoll_set(epoll, libc::EPOLL_CTL_MOD, c.fd, READABLE, idx as u64).is_err() {
                self.close(idx);
            }
        }
    }
}

/// Writes in a broadcast pass between two looks for new messages.
const POLL_EVERY: usize = 64;

/// The most parts one `writev` takes here; more wait in the backlog.
const MAX_PARTS: usize = 64;

/// One `write` (one part) or `writev` of `parts` to connection `idx`; what the kernel does not
/// take waits in its backlog for EPOLLOUT. `false`: the connection is to be closed.
fn write(epoll: RawFd, idx: usize, c: &mut Conn, parts: &[&[u8]]) -> bool {
    let mut written = 0;
    if c.backlog.is_empty() {
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut iov = [empty; MAX_PARTS];
        let mut count = 0;
        let mut total = 0;
        for p in parts.iter().filter(|p| !p.is_empty()).take(MAX_PARTS) {
            iov[count] = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
            count += 1;
            total += p.len();
        }
        if count == 0 {
            return true;
        }
        // SAFETY: every iovec points into a slice of `parts`, alive across the call.
        let n = unsafe {
            if count == 1 {
                libc::write(c.fd, iov[0].iov_base, iov[0].iov_len)
            } else {
                libc::writev(c.fd, iov.as_ptr(), count as i32)
            }
        };
        if n < 0 && !matches!(errno(), libc::EAGAIN | libc::EINTR) {
            return false;
        }
        written = n.max(0) as usize;
        if written == total && parts.iter().filter(|p| !p.is_empty()).count() <= MAX_PARTS {
            return true;
        }
    }
    // Queue what is left, in order, behind anything already owed.
    let mut skip = written;
    for p in parts {
        let from = skip.min(p.len());
        skip -= from;
        c.backlog.extend_from_slice(&p[from..]);
    }
    if c.backlog.len() > MAX_BACKLOG {
        return false;
    }
    if !c.waiting && !c.backlog.is_empty() {
        c.waiting = true;
        if epoll_set(epoll, libc::EPOLL_CTL_MOD, c.fd, WRITABLE, idx as u64).is_err() {
            return false;
        }
    }
    true
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref().unwrap_or("relay") {
        "relay" => Mode::Relay,
        "echo" => Mode::Echo,
        "shootout" => Mode::Shootout,
        "pubsub" => Mode::Pubsub,
        other => bail!("unknown mode {other:?}: relay, echo, shootout or pubsub"),
    };
    let port: u16 = match args.next() {
        Some(p) => p.parse().with_context(|| format!("port {p:?}"))?,
        None => 9203,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).context("binding 127.0.0.1")?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let fd = listener.into_raw_fd();
    // std listens with a backlog of 128; a second listen() raises it, for bursts of connects.
    // SAFETY: `fd` is a listening socket we own.
    unsafe { libc::listen(fd, 4096) };
    println!("floor peer ({mode:?}) on {bound}");
    std::io::stdout().flush()?;
    Floor::new(mode, fd)?.run()
}
