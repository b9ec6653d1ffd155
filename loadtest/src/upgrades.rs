//! The `upgrades` scenario: connections opened as fast as the server takes them, `clients` at a
//! time, for a bounded time or count. Each one connects, sends its upgrade request (with its
//! token, if the target has tokens), reads the answer and closes: after a 101 with a close
//! frame, waiting for the server's close frame and its end of the stream, as RFC 6455 §7.1.1
//! has a client do; after a refusal (a run of deliberately refused requests expects 401 or
//! 404), reading the rest of the answer until the server closes. Reported: answers per second,
//! the handshake's latency (connect until the whole answer head is in) and the server's CPU per
//! request. Not the server's work alone: the rate of a generator on one core is its own limit
//! too, so CPU per request is the figure that compares servers.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use corecast::ws::frame::{self, Decoder, Inbound, OpCode};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::options::Options;
use crate::procstat;
use crate::report::{Latency, Report, ServerUsage, UpgradeStats};
use crate::ws::Target;

/// The most one request may take, connect to close; past it the request is a fault.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for the server to close after the close handshake or a refusal.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Faults kept in full; beyond that they are only counted.
const KEEP_FAULTS: usize = 20;

/// What the threads share: the next request's number, when to stop, and the running count.
struct Shared {
    opts: Options,
    /// Requests to make in all; `u64::MAX` when only the duration bounds the run.
    limit: u64,
    next: AtomicU64,
    stop: AtomicBool,
    answered: AtomicU64,
    /// Generator threads still running.
    running: AtomicUsize,
}

/// One thread's findings.
#[derive(Default)]
struct Found {
    latency: Option<Histogram<u64>>,
    statuses: BTreeMap<u16, u64>,
    requests: u64,
    answered: u64,
    clean_closes: u64,
    fault_count: u64,
    faults: Vec<String>,
}

impl Found {
    fn fault(&mut self, f: String) {
        self.fault_count += 1;
        if self.faults.len() < KEEP_FAULTS {
            self.faults.push(f);
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// How one request ended.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    /// From the start of the connect until the answer's head was in.
    handshake: Duration,
    /// After a 101: the server answered the close frame and closed its end.
    clean_close: bool,
}

/// Runs the upgrades scenario to its end and reports.
pub fn run(opts: Options) -> anyhow::Result<Report> {
    if opts.clients == 0 || opts.threads == 0 || opts.targets.is_empty() {
        bail!("clients and threads must be at least 1");
    }
    if opts.targets.iter().any(|t| t.tls) {
        bail!("the upgrades scenario speaks plain ws:// only");
    }
    corecast::limits::raise_open_files();
    let shared = Arc::new(Shared {
        limit: opts.messages.unwrap_or(u64::MAX),
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        answered: AtomicU64::new(0),
        running: AtomicUsize::new(opts.threads),
        opts: opts.clone(),
    });
    let (ready_tx, ready_rx) = flume::unbounded::<()>();
    let mut go = Vec::new();
    let mut handles = Vec::new();
    for t in 0..opts.threads {
        let placement = match opts.cpus.get(t % opts.cpus.len().max(1)) {
            Some(cpu) => Placement::Fixed(*cpu),
            None => Placement::Unbound,
        };
        // Workers of this thread: an even share of `clients`, the first threads one more.
        let workers = opts.clients / opts.threads + usize::from(t < opts.clients % opts.threads);
        let (go_tx, go_rx) = flume::bounded::<()>(1);
        go.push(go_tx);
        let (shared, ready) = (Arc::clone(&shared), ready_tx.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("upgrades-{t}"))
            .io_memory(64 << 10)
            .spawn(move || async move {
                let _ = ready.send(());
                let found = if go_rx.recv_async().await.is_ok() {
                    thread_main(&shared, workers).await
                } else {
                    Found::default()
                };
                shared.running.fetch_sub(1, Ordering::SeqCst);
                found
            })
            .map_err(|e| anyhow::anyhow!("cannot start a generator thread (io_uring and memlock, as for the server): {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..opts.threads {
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            shared.stop.store(true, Ordering::SeqCst);
            bail!("the generator threads did not start within 30 s");
        }
    }
    let cpu_before = procstat::cpu_seconds(&opts.server_pids);
    let rss_before = procstat::rss_kib(&opts.server_pids);
    let t0 = Instant::now();
    for g in &go {
        let _ = g.send(());
    }
    watch(&shared, t0);
    let window = t0.elapsed();
    let mut found = Found::default();
    let mut latency = histogram();
    for h in handles {
        let f = match h.join() {
            Ok(f) => f,
            Err(e) => bail!("a generator thread failed: {e}"),
        };
        if let Some(l) = &f.latency {
            latency.add(l).ok();
        }
        for (status, n) in f.statuses {
            *found.statuses.entry(status).or_default() += n;
        }
        found.requests += f.requests;
        found.answered += f.answered;
        found.clean_closes += f.clean_closes;
        found.fault_count += f.fault_count;
        for e in f.faults {
            if found.faults.len() < KEEP_FAULTS {
                found.faults.push(e);
            }
        }
    }
    // The server's last closes: every client has read its end of the stream, so its work is
    // done; a moment for its own close calls to complete.
    std::thread::sleep(Duration::from_millis(50));
    let cpu_after = procstat::cpu_seconds(&opts.server_pids);
    let rss_after = procstat::rss_kib(&opts.server_pids);
    if opts.progress {
        eprintln!();
    }
    Ok(report(
        &opts,
        found,
        latency,
        window,
        (cpu_before, cpu_after),
        (rss_before, rss_after),
    ))
}

/// The report of a finished run. Pure, so the figures it prints can be checked.
fn report(
    opts: &Options,
    found: Found,
    latency: Histogram<u64>,
    window: Duration,
    cpu: (Option<f64>, Option<f64>),
    rss: (Option<u64>, Option<u64>),
) -> Report {
    let secs = window.as_secs_f64().max(1e-9);
    let expect = opts.targets[0].expect;
    let cpu_seconds = match cpu {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let per_request = (found.answered > 0).then(|| cpu_seconds * 1e6 / found.answered as f64);
    let server = (!opts.server_pids.is_empty()).then(|| ServerUsage {
        pids: opts.server_pids.clone(),
        cpu_seconds,
        cpu_us_per_delivery: per_request,
        rss_before_kib: rss.0.unwrap_or(0),
        rss_after_kib: rss.1.unwrap_or(0),
        rss_per_connection_bytes: None,
        cpu_us_per_connection_second: None,
    });
    Report {
        scenario: opts.scenario.name().into(),
        url: opts.url.clone(),
        clients: opts.clients,
        threads: opts.threads,
        payload_bytes: 0,
        in_flight: opts.clients,
        window_seconds: window.as_secs_f64(),
        sent: found.requests,
        expected_deliveries: found.requests,
        deliveries: found.answered,
        deliveries_per_second: found.answered as f64 / secs,
        latency: Latency::of(&latency),
        server,
        upgrades: Some(UpgradeStats {
            expected_status: expect,
            requests: found.requests,
            answered: found.answered,
            per_second: found.answered as f64 / secs,
            statuses: found.statuses,
            clean_closes: found.clean_closes,
            server_cpu_us_per_request: per_request,
        }),
        ok: found.fault_count == 0 && found.requests > 0,
        fault_count: found.fault_count + u64::from(found.requests == 0),
        faults: if found.requests == 0 {
            vec!["no request was made".into()]
        } else {
            found.faults
        },
        ..Report::default()
    }
}

/// Watches the run from the calling thread: progress, and the stop when time is up.
fn watch(shared: &Shared, t0: Instant) {
    let opts = &shared.opts;
    let mut last_print = Instant::now();
    while shared.running.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(20));
        let elapsed = t0.elapsed();
        if elapsed >= opts.duration {
            shared.stop.store(true, Ordering::SeqCst);
        }
        if opts.progress && last_print.elapsed() >= Duration::from_millis(500) {
            last_print = Instant::now();
            let answered = shared.answered.load(Ordering::Relaxed);
            let rate = answered as f64 / elapsed.as_secs_f64().max(1e-9);
            eprint!(
                "\r[upgrades] {:>6.1}s  answered {answered} ({rate:.0}/s){}\x1b[K",
                elapsed.as_secs_f64(),
                if shared.stop.load(Ordering::Relaxed) {
                    "  finishing"
                } else {
                    ""
                }
            );
            let _ = io::stderr().flush();
        }
    }
}

/// One thread: `workers` requests in flight, each worker starting its next when one ends.
async fn thread_main(shared: &Arc<Shared>, workers: usize) -> Found {
    let found = Rc::new(RefCell::new(Found {
        latency: Some(histogram()),
        ..Found::default()
    }));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (shared, found) = (Arc::clone(shared), Rc::clone(&found));
            glommio::spawn_local(async move { worker(&shared, &found).await })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    Rc::try_unwrap(found)
        .ok()
        .expect("every worker has ended")
        .into_inner()
}

async fn worker(shared: &Shared, found: &RefCell<Found>) {
    let opts = &shared.opts;
    while !shared.stop.load(Ordering::Relaxed) {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.limit {
            break;
        }
        let target = &opts.targets[i as usize % opts.targets.len()];
        let outcome = future::or(request(target, i as usize), async {
            Timer::new(REQUEST_TIMEOUT).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer and close within 10 s",
            ))
        })
        .await;
        let mut f = found.borrow_mut();
        f.requests += 1;
        match outcome {
            Ok(a) => {
                *f.statuses.entry(a.status).or_default() += 1;
                if let Some(l) = f.latency.as_mut() {
                    l.saturating_record((a.handshake.as_micros() as u64).max(1));
                }
                if a.status != target.expect {
                    f.fault(format!(
                        "request {i}: answered {} where {} was expected",
                        a.status, target.expect
                    ));
                } else if a.status == 101 && !a.clean_close {
                    f.fault(format!(
                        "request {i}: the server did not answer the close frame and close"
                    ));
                } else {
                    f.answered += 1;
                    f.clean_closes += u64::from(a.clean_close);
                    shared.answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                *f.statuses.entry(0).or_default() += 1;
                f.fault(format!("request {i}: {e}"));
            }
        }
    }
}

/// One request: connect, ask, read the answer, close.
async fn request(target: &Target, i: usize) -> io::Result<Answer> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(target.request(i).as_bytes()).await?;
    let mut buf = [0u8; 2048];
    let mut head = Vec::with_capacity(256);
    let end = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before answering",
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > 8192 {
            return Err(io::Error::other("answer head too large"));
        }
    };
    let handshake = started.elapsed();
    let status =
        status_of(&head).ok_or_else(|| io::Error::other("an answer that is not HTTP/1.1"))?;
    let clean_close = if status == 101 {
        close_handshake(&mut stream, &head[end..], &mut buf).await?
    } else {
        // The refusal's body, then the server's end of the stream.
        drain(&mut stream, &mut buf).await;
        false
    };
    let _ = stream.close().await;
    Ok(Answer {
        status,
        handshake,
        clean_close,
    })
}

/// Sends a close frame (1000) and reads until the server's close frame and its end of the
/// stream: true when both came.
async fn close_handshake(stream: &mut TcpStream, early: &[u8], buf: &mut [u8]) -> io::Result<bool> {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"done");
    let close = frame::encode_masked(OpCode::Close, &payload, [0x37, 0xfa, 0x21, 0x3d]);
    stream.write_all(&close).await?;
    let mut decoder = Decoder::for_server_frames(1 << 20);
    let mut items = Vec::new();
    let closed = |items: &[Inbound]| items.iter().any(|i| matches!(i, Inbound::Close { .. }));
    let _ = decoder.feed(early, &mut items);
    let mut answered = closed(&items);
    let read = async {
        while !answered {
            let n = stream.read(buf).await?;
            if n == 0 {
                return Ok(false);
            }
            items.clear();
            decoder
                .feed(&buf[..n], &mut items)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            answered = closed(&items);
        }
        // After its close frame the server closes its end (RFC 6455 §7.1.1).
        while stream.read(buf).await? > 0 {}
        Ok(true)
    };
    future::or(read, async {
        Timer::new(CLOSE_WAIT).await;
        Ok(false)
    })
    .await
}

/// Reads until the server closes, for at most `CLOSE_WAIT`.
async fn drain(stream: &mut TcpStream, buf: &mut [u8]) {
    let read = async { while matches!(stream.read(buf).await, Ok(n) if n > 0) {} };
    future::or(read, async {
        Timer::new(CLOSE_WAIT).await;
    })
    .await;
}

/// The status of an HTTP/1.1 answer head: `HTTP/1.1 101 Switching Protocols` gives 101.
fn status_of(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let code = rest.get(..3)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// `token` with its signature spoiled: the same header and claims, one character of the
/// signature changed, so a verifier does all its work and then refuses it (401 "bad token
/// signature"). The character is a quarter into the signature: an ES256 signature's `r`,
/// whose value stays in range.
pub fn spoil(token: &str) -> String {
    let Some(dot) = token.rfind('.') else {
        return format!("{token}x");
    };
    let sig = &token[dot + 1..];
    if sig.len() < 4 {
        return format!("{token}A");
    }
    let at = dot + 1 + sig.len() / 4;
    let was = token.as_bytes()[at];
    let now = if was == b'A' { 'B' } else { 'A' };
    format!("{}{now}{}", &token[..at], &token[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Scenario;
    use crate::topics::TopicPlan;

    #[test]
    fn reads_the_status_of_an_answer() {
        assert_eq!(
            status_of(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Some(101)
        );
        assert_eq!(status_of(b"HTTP/1.1 401 Unauthorized\r\n"), Some(401));
        assert_eq!(status_of(b"HTTP/1.0 200 OK\r\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 4"), None);
    }

    #[test]
    fn a_spoiled_token_keeps_its_shape() {
        let token = "aGVhZA.Y2xhaW1z.c2lnbmF0dXJlAAAA";
        let bad = spoil(token);
        assert_ne!(bad, token);
        assert_eq!(bad.len(), token.len());
        assert!(bad.starts_with("aGVhZA.Y2xhaW1z."), "{bad}");
        let (a, b) = (
            token.rsplit('.').next().unwrap(),
            bad.rsplit('.').next().unwrap(),
        );
        let diff: Vec<usize> = (0..a.len())
            .filter(|&k| a.as_bytes()[k] != b.as_bytes()[k])
            .collect();
        assert_eq!(diff, [a.len() / 4]);
    }

    fn options() -> Options {
        let url = "ws://127.0.0.1:9/ws";
        Options {
            scenario: Scenario::Upgrades,
            targets: vec![Target::parse(url).unwrap()],
            url: url.into(),
            clients: 64,
            messages: None,
            duration: Duration::from_secs(5),
            in_flight: 1,
            rate: None,
            size: 64,
            threads: 1,
            cpus: Vec::new(),
            server_pids: vec![42],
            progress: false,
            step: 0,
            sample: 0,
            concurrent: 0,
            limit: Duration::from_secs(1),
            topics: TopicPlan {
                topics: 0,
                per_client: 0,
                publishers: 0,
                publish_topics: 0,
            },
            socket_io: false,
            deflate: false,
        }
    }

    #[test]
    fn report_counts_answers_and_cpu_per_request() {
        let mut found = Found {
            requests: 2000,
            answered: 1999,
            clean_closes: 1999,
            ..Found::default()
        };
        found.statuses.insert(101, 1999);
        found.statuses.insert(0, 1);
        found.fault("request 7: connection refused".into());
        let mut latency = histogram();
        latency.record(150).unwrap();
        let r = report(
            &options(),
            found,
            latency,
            Duration::from_secs(2),
            (Some(1.0), Some(1.3998)),
            (Some(100), Some(120)),
        );
        assert!(!r.ok);
        let u = r.upgrades.as_ref().unwrap();
        assert_eq!(
            (u.requests, u.answered, u.expected_status),
            (2000, 1999, 101)
        );
        assert!((u.per_second - 999.5).abs() < 1e-9);
        let cpu = u.server_cpu_us_per_request.unwrap();
        assert!((cpu - 200.0).abs() < 1e-6, "{cpu}");
        let summary = r.summary();
        assert!(
            summary.contains("upgrades: 1999 of 2000 requests answered 101"),
            "{summary}"
        );
        assert!(summary.contains("200.00 CPU-µs per request"), "{summary}");
        assert!(summary.contains("handshake: p50 150µs"), "{summary}");
        assert!(summary.contains("FAILED: 1 faults"), "{summary}");
    }
}
