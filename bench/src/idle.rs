//! What an idle connection costs beyond the server's own memory, for the idle scenarios: the
//! kernel's memory for the server's end of each connection (from `/proc/slabinfo` and
//! `/proc/net/sockstat`, read before the connections open and while they are held) and the
//! server's keep-alive CPU over a window in its steady state (its process CPU clock). A thread
//! beside the load generator reads them; the generator and the tables are elsewhere.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// A slab cache: objects in use, and the memory one object takes in its slab.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cache {
    active: u64,
    bytes_per_object: f64,
}

/// The slab caches by name, as `/proc/slabinfo` lists them.
type Slabs = BTreeMap<String, Cache>;

/// Reads `/proc/slabinfo` (version 2.1): `None` where it cannot be read (it is root's alone).
fn read_slabs() -> Option<Slabs> {
    parse_slabinfo(
        &std::fs::read_to_string("/proc/slabinfo").ok()?,
        page_size(),
    )
}

fn parse_slabinfo(text: &str, page: f64) -> Option<Slabs> {
    let mut lines = text.lines();
    if !lines.next()?.starts_with("slabinfo - version: 2.") {
        return None;
    }
    let mut caches = Slabs::new();
    for line in lines.filter(|l| !l.starts_with('#')) {
        // name active_objs num_objs objsize objperslab pagesperslab : ...
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        let (Some(active), Some(per_slab), Some(pages)) = (num(1), num(4), num(5)) else {
            continue;
        };
        if per_slab == 0 {
            continue;
        }
        let bytes_per_object = pages as f64 * page / per_slab as f64;
        caches.insert(
            f[0].to_string(),
            Cache {
                active,
                bytes_per_object,
            },
        );
    }
    Some(caches)
}

fn page_size() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        page as f64
    } else {
        4096.0
    }
}

/// The memory one object of a cache takes in its slab. Caches of the same size are often merged
/// into one that `/proc/slabinfo` lists under another name (the epoll wait-queue hook under
/// `anon_vma_chain`, say); `/sys/kernel/slab/<name>` follows the merge.
fn bytes_per_object(name: &str, slabs: &Slabs) -> Option<f64> {
    let read = |file: &str| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/sys/kernel/slab/{name}/{file}")).ok()?;
        text.split_whitespace().next()?.parse().ok()
    };
    if let (Some(order), Some(per_slab)) = (read("order"), read("objs_per_slab")) {
        if per_slab > 0 && order < 16 {
            return Some(page_size() * (1u64 << order) as f64 / per_slab as f64);
        }
    }
    slabs.get(name).map(|c| c.bytes_per_object)
}

/// `/proc/net/sockstat`'s TCP line: sockets in use, and the pages of buffer memory all TCP
/// sockets hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpStat {
    in_use: u64,
    mem_pages: u64,
}

fn read_tcp() -> Option<TcpStat> {
    parse_sockstat(&std::fs::read_to_string("/proc/net/sockstat").ok()?)
}

fn parse_sockstat(text: &str) -> Option<TcpStat> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| -> Option<u64> {
        let i = f.iter().position(|w| *w == key)?;
        f.get(i + 1)?.parse().ok()
    };
    Some(TcpStat {
        in_use: after("inuse")?,
        mem_pages: after("mem")?,
    })
}

/// The kernel's state at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    slabs: Option<Slabs>,
    tcp: Option<TcpStat>,
}

impl Snapshot {
    fn take() -> Snapshot {
        Snapshot {
            slabs: read_slabs(),
            tcp: read_tcp(),
        }
    }
}

/// io_uring requests the generator itself keeps per connection: each glommio stream arms one
/// read-readiness poll when it is built. Counted against the server only above this.
const GENERATOR_IO_URING_PER_CONNECTION: f64 = 1.0;

/// One part of the kernel's memory for the server's end of a connection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KernelPart {
    pub part: &'static str,
    /// The slab caches its objects come from.
    pub caches: &'static str,
    /// Objects of this part per connection at the server's end, as counted.
    pub objects_per_connection: f64,
    pub bytes_per_connection: f64,
}

/// The kernel's memory per connection, measured over the connections' opening.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KernelMemory {
    /// The server's end: the sum of `parts`.
    pub server_bytes_per_connection: f64,
    /// Both ends of the loopback connection, the generator's included.
    pub both_ends_bytes_per_connection: f64,
    pub parts: Vec<KernelPart>,
    /// What changed, both ends together: `tcp_in_use` and `tcp_mem_pages` from sockstat, the
    /// rest active objects of the slab cache of that name.
    pub deltas: BTreeMap<String, i64>,
}

/// What each socket file holds besides its `tcp_sock` and inode, one each: these caches are
/// shared with every file on the machine (procfs lookups by other processes add thousands of
/// dentries during a run), so they are counted per socket inode rather than by their own change.
const PER_SOCKET_FILE: [&str; 4] = ["filp", "dentry", "lsm_file_cache", "lsm_inode_cache"];

/// What an epoll registration holds, one each: the watch, its wait-queue hook, and the head of
/// the file's list of watches. Counted by `ep_head`, the one of the three no other cache is
/// merged with here.
const PER_EPOLL_WATCH: [&str; 3] = ["eventpoll_epi", "eventpoll_pwq", "ep_head"];

/// The server's share of what changed between `before` (server started, nothing connected)
/// and `after` (every connection held), for `connections` connections. Both ends of each
/// connection are on this machine; they are told apart so:
///
/// * the socket (`TCP`/`TCPv6`, `sock_inode_cache`, and the file, dentry and security blobs
///   of `PER_SOCKET_FILE`): each end holds one of each, so the server's share is half;
/// * epoll registrations: all the server's (the generator uses io_uring, not epoll);
/// * io_uring requests: the server's beyond the generator's one per connection;
/// * TCP buffer memory (sockstat's `mem`): half, both ends being idle.
///
/// `size` gives the memory one object of a cache takes.
fn kernel_memory(
    before: &Snapshot,
    after: &Snapshot,
    connections: usize,
    size: &dyn Fn(&str) -> f64,
) -> Option<KernelMemory> {
    let (b, a) = (before.slabs.as_ref()?, after.slabs.as_ref()?);
    let n = connections.max(1) as f64;
    let delta = |name: &str| -> i64 {
        let count = |s: &Slabs| s.get(name).map_or(0, |c| c.active as i64);
        count(a) - count(b)
    };
    let mut deltas = BTreeMap::new();
    for name in ["TCP", "TCPv6", "sock_inode_cache", "ep_head", "io_kiocb"] {
        deltas.insert(name.to_string(), delta(name));
    }
    let (tcp_before, tcp_after) = (before.tcp?, after.tcp?);
    deltas.insert(
        "tcp_in_use".into(),
        tcp_after.in_use as i64 - tcp_before.in_use as i64,
    );
    let mem_pages = tcp_after.mem_pages as i64 - tcp_before.mem_pages as i64;
    deltas.insert("tcp_mem_pages".into(), mem_pages);

    let sockets = delta("sock_inode_cache").max(0) as f64;
    let tcp_bytes =
        delta("TCP").max(0) as f64 * size("TCP") + delta("TCPv6").max(0) as f64 * size("TCPv6");
    let tcp_objects = (delta("TCP") + delta("TCPv6")).max(0) as f64;
    let file_bytes: f64 = PER_SOCKET_FILE.iter().map(|c| size(c)).sum();
    let watches = delta("ep_head").max(0) as f64;
    let watch_bytes: f64 = PER_EPOLL_WATCH.iter().map(|c| size(c)).sum();
    let requests = delta("io_kiocb").max(0) as f64;
    let server_requests = (requests - GENERATOR_IO_URING_PER_CONNECTION * n).max(0.0);
    let buffer_bytes = mem_pages.max(0) as f64 * page_size();

    let part = |part, caches, objects: f64, bytes: f64| KernelPart {
        part,
        caches,
        objects_per_connection: objects / n,
        bytes_per_connection: bytes / n,
    };
    let parts = vec![
        part("tcp_sock", "TCP", tcp_objects / 2.0, tcp_bytes / 2.0),
        part(
            "socket inode",
            "sock_inode_cache",
            sockets / 2.0,
            sockets / 2.0 * size("sock_inode_cache"),
        ),
        part(
            "file, dentry, security blobs",
            "filp, dentry, lsm_file_cache, lsm_inode_cache",
            sockets / 2.0,
            sockets / 2.0 * file_bytes,
        ),
        part(
            "epoll registration",
            "eventpoll_epi, eventpoll_pwq, ep_head",
            watches,
            watches * watch_bytes,
        ),
        part(
            "io_uring requests",
            "io_kiocb",
            server_requests,
            server_requests * size("io_kiocb"),
        ),
        part(
            "TCP buffers (pages)",
            "sockstat mem",
            mem_pages.max(0) as f64 / 2.0,
            buffer_bytes / 2.0,
        ),
    ];
    let server: f64 = parts.iter().map(|p| p.bytes_per_connection).sum();
    let both = (tcp_bytes
        + sockets * (size("sock_inode_cache") + file_bytes)
        + watches * watch_bytes
        + requests * size("io_kiocb")
        + buffer_bytes)
        / n;
    Some(KernelMemory {
        server_bytes_per_connection: server,
        both_ends_bytes_per_connection: both,
        parts,
        deltas,
    })
}

/// The most TCP sockets that may open or close elsewhere on the machine while the connections
/// open, as a share of theirs, for the kernel's figure to count as this server's.
const OTHER_SOCKETS: f64 = 0.01;

/// Why the kernel's change cannot be this run's alone, if it cannot: the TCP sockets in use
/// changed by more (or less) than the two ends of each connection, so other processes opened
/// or closed sockets meanwhile (their objects would be counted as the server's).
fn disturbance(before: TcpStat, after: Option<TcpStat>, connections: usize) -> Option<String> {
    let after = after?;
    let ours = 2 * connections as i64;
    let seen = after.in_use as i64 - before.in_use as i64;
    ((seen - ours).abs() as f64 > OTHER_SOCKETS * ours as f64).then(|| {
        format!(
            "TCP sockets in use changed by {seen}, not {ours}: other processes opened or \
             closed sockets meanwhile, so the kernel's figure is left out"
        )
    })
}

/// The server's keep-alive CPU over a window in its steady state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeepAlive {
    /// What the server does to keep idle connections alive, at the settings it ran with.
    pub what: &'static str,
    /// From the moment every connection was up and the server quiet to the window's start.
    pub settle_s: f64,
    pub window_s: f64,
    pub connections: usize,
    /// The server's CPU time over the window (its processes' CPU clocks, in ns).
    pub cpu_seconds: f64,
    pub cpu_us_per_connection_second: f64,
}

/// CPU seconds the processes have used, from their CPU-time clocks (nanoseconds, threads
/// that ended included); `None` if any is gone. The tick-counted times of `/proc/<pid>/stat`
/// (10 ms) are too coarse for the few milliseconds a second an idle server uses.
pub fn cpu_clock_seconds(pids: &[u32]) -> Option<f64> {
    pids.iter()
        .map(|&pid| {
            // The clock id holds the pid shifted left by 3: a larger one would wrap onto
            // another clock (this process's, for 2^31 - 1).
            if pid > (i32::MAX as u32) >> 3 {
                return None;
            }
            let mut clock: libc::clockid_t = 0;
            // SAFETY: both calls only write through the pointers given, to live locals.
            unsafe {
                if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) != 0 {
                    return None;
                }
                let mut ts: libc::timespec = std::mem::zeroed();
                if libc::clock_gettime(clock, &mut ts) != 0 {
                    return None;
                }
                Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
            }
        })
        .sum()
}

/// What the sampler is to measure.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    pub pids: Vec<u32>,
    pub connections: usize,
    /// The server's keep-alive, in words.
    pub keepalive: &'static str,
    pub settle: Duration,
    pub window: Duration,
}

/// What the sampler found.
#[derive(Debug, Clone, Default)]
pub struct Sampled {
    pub kernel: Option<KernelMemory>,
    pub keepalive: Option<KeepAlive>,
    /// Why a figure is missing, if one is.
    pub missing: Option<String>,
}

/// A sampler running beside the generator; `finish` after the generator returns.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Sampled>,
}

/// How long connections may take to come up before the sampler gives up.
const CONNECT_BOUND: Duration = Duration::from_secs(120);
/// How long the server may stay busy after the last connection is up (upgrades, TLS).
const QUIET_BOUND: Duration = Duration::from_secs(30);
/// The server is quiet when it uses less than this share of a CPU over `QUIET_PROBE`.
const QUIET_SHARE: f64 = 0.10;
const QUIET_PROBE: Duration = Duration::from_millis(250);
/// The share of the expected sockets (two per connection) that counts as all of them: other
/// processes on the machine open and close sockets too.
const SOCKETS_SEEN: f64 = 0.98;

impl Sampler {
    /// Reads the kernel's state now, before the generator connects, then, on a thread: waits
    /// until every connection's two sockets are in use and the server has gone quiet, reads
    /// the kernel again, waits `settle`, and reads the server's CPU over `window`.
    pub fn start(spec: SampleSpec) -> Sampler {
        let before = Snapshot::take();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handle = std::thread::spawn(move || sample(&spec, &before, &stopped));
        Sampler { stop, handle }
    }

    /// Stops a sampler still waiting (the generator has returned) and gives what it found.
    pub fn finish(self) -> Sampled {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or_else(|_| Sampled {
            missing: Some("the sampler failed".into()),
            ..Sampled::default()
        })
    }
}

/// Sleeps `d`, or less if `stop` is set meanwhile: false then.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn sample(spec: &SampleSpec, before: &Snapshot, stop: &AtomicBool) -> Sampled {
    let missing = |why: &str| Sampled {
        missing: Some(why.into()),
        ..Sampled::default()
    };
    let Some(base) = before.tcp else {
        return missing("/proc/net/sockstat unreadable");
    };
    let wanted = base.in_use + (2.0 * spec.connections as f64 * SOCKETS_SEEN) as u64;
    let all_up = || read_tcp().is_some_and(|t| t.in_use >= wanted);
    let start = Instant::now();
    while !all_up() {
        if start.elapsed() > CONNECT_BOUND || !sleep_unless(stop, Duration::from_millis(50)) {
            return missing("the connections were not all up while the sampler waited");
        }
    }
    let quiet_from = Instant::now();
    loop {
        let Some(c0) = cpu_clock_seconds(&spec.pids) else {
            return missing("the server exited");
        };
        if !sleep_unless(stop, QUIET_PROBE) {
            return missing("the generator ended before the server went quiet");
        }
        let Some(c1) = cpu_clock_seconds(&spec.pids) else {
            return missing("the server exited");
        };
        if c1 - c0 < QUIET_SHARE * QUIET_PROBE.as_secs_f64() {
            break;
        }
        if quiet_from.elapsed() > QUIET_BOUND {
            return missing("the server did not go quiet after the connections were up");
        }
    }
    let after = Snapshot::take();
    let disturbed = disturbance(base, after.tcp, spec.connections);
    let kernel = after
        .slabs
        .as_ref()
        .filter(|_| disturbed.is_none())
        .and_then(|slabs| {
            let size = |name: &str| bytes_per_object(name, slabs).unwrap_or(0.0);
            kernel_memory(before, &after, spec.connections, &size)
        });
    let mut found = Sampled {
        kernel,
        missing: disturbed.or_else(|| {
            before
                .slabs
                .is_none()
                .then(|| "/proc/slabinfo unreadable (it needs root)".to_string())
        }),
        ..Sampled::default()
    };
    if !sleep_unless(stop, spec.settle) {
        found.missing = Some("the generator ended before the keep-alive window".into());
        return found;
    }
    let c0 = cpu_clock_seconds(&spec.pids);
    let t0 = Instant::now();
    // Whether every connection stayed up is the generator's verdict (its report's faults);
    // the window only has to end before the generator lets them go.
    let held = sleep_unless(stop, spec.window);
    let window = t0.elapsed().as_secs_f64();
    match (c0, cpu_clock_seconds(&spec.pids)) {
        (Some(c0), Some(c1)) if held => {
            let cpu = c1 - c0;
            found.keepalive = Some(KeepAlive {
                what: spec.keepalive,
                settle_s: spec.settle.as_secs_f64(),
                window_s: window,
                connections: spec.connections,
                cpu_seconds: cpu,
                cpu_us_per_connection_second: cpu * 1e6
                    / spec.connections.max(1) as f64
                    / window.max(1e-9),
            });
        }
        _ => found.missing = Some("the generator ended within the keep-alive window".into()),
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLABINFO: &str = "\
slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
TCP                   66    130   2368   13    8 : tunables    0    0    0 : slabdata     10     10      0
sock_inode_cache     303    361    832   19    4 : tunables    0    0    0 : slabdata     19     19      0
ep_head              866   2040     24  170    1 : tunables    0    0    0 : slabdata     12     12      0
io_kiocb             128    192    256   16    1 : tunables    0    0    0 : slabdata     12     12      0
filp                 756    756    192   21    1 : tunables    0    0    0 : slabdata     36     36      0
";

    #[test]
    fn reads_slabinfo_and_sockstat() {
        let slabs = parse_slabinfo(SLABINFO, 4096.0).unwrap();
        let tcp = slabs["TCP"];
        assert_eq!(tcp.active, 66);
        assert!((tcp.bytes_per_object - 8.0 * 4096.0 / 13.0).abs() < 1e-9);
        assert_eq!(slabs.len(), 5);
        assert!(parse_slabinfo("not slabinfo\n", 4096.0).is_none());
        let stat = "sockets: used 11\nTCP: inuse 20002 orphan 0 tw 9262 alloc 20003 mem 250\n";
        assert_eq!(
            parse_sockstat(stat),
            Some(TcpStat {
                in_use: 20002,
                mem_pages: 250
            })
        );
        assert_eq!(parse_sockstat("UDP: inuse 0 mem 0\n"), None);
    }

    /// 1,000 connections to an epoll server whose generator holds one io_uring request each:
    /// the server gets half of each socket and every epoll watch, and no io_uring request.
    #[test]
    fn the_server_gets_half_the_sockets_and_its_own_registrations() {
        let before = Snapshot {
            slabs: parse_slabinfo(SLABINFO, 4096.0),
            tcp: Some(TcpStat {
                in_use: 5,
                mem_pages: 10,
            }),
        };
        let mut grown = before.slabs.clone().unwrap();
        for (name, more) in [
            ("TCP", 2000),
            ("sock_inode_cache", 2000),
            ("ep_head", 1000),
            ("io_kiocb", 1000),
            ("filp", 5000),
        ] {
            grown.get_mut(name).unwrap().active += more;
        }
        let after = Snapshot {
            slabs: Some(grown),
            tcp: Some(TcpStat {
                in_use: 2005,
                mem_pages: 10,
            }),
        };
        let slabs = before.slabs.clone().unwrap();
        let size = |name: &str| slabs.get(name).map_or(0.0, |c| c.bytes_per_object);
        let k = kernel_memory(&before, &after, 1000, &size).unwrap();
        let part = |name: &str| k.parts.iter().find(|p| p.part == name).unwrap().clone();
        assert_eq!(part("tcp_sock").objects_per_connection, 1.0);
        assert!((part("tcp_sock").bytes_per_connection - 8.0 * 4096.0 / 13.0).abs() < 1e-6);
        assert_eq!(part("socket inode").objects_per_connection, 1.0);
        // filp grew by 5 per connection, but files are counted per socket inode.
        assert_eq!(
            part("file, dentry, security blobs").objects_per_connection,
            1.0
        );
        assert_eq!(part("epoll registration").objects_per_connection, 1.0);
        assert_eq!(part("io_uring requests").objects_per_connection, 0.0);
        assert_eq!(part("TCP buffers (pages)").bytes_per_connection, 0.0);
        let sum: f64 = k.parts.iter().map(|p| p.bytes_per_connection).sum();
        assert!((k.server_bytes_per_connection - sum).abs() < 1e-9);
        assert!(k.both_ends_bytes_per_connection > k.server_bytes_per_connection);
        assert_eq!(k.deltas["tcp_in_use"], 2000);
        // Without slabinfo (not root), no figure.
        let blind = Snapshot {
            slabs: None,
            tcp: before.tcp,
        };
        assert!(kernel_memory(&blind, &after, 1000, &size).is_none());
    }

    #[test]
    fn other_sockets_opening_meanwhile_void_the_kernel_figure() {
        let at = |in_use| TcpStat {
            in_use,
            mem_pages: 0,
        };
        assert_eq!(disturbance(at(100), Some(at(20_100)), 10_000), None);
        assert_eq!(disturbance(at(100), Some(at(20_150)), 10_000), None);
        let noisy = disturbance(at(100), Some(at(32_050)), 10_000).unwrap();
        assert!(noisy.contains("31950, not 20000"), "{noisy}");
        assert!(disturbance(at(30_000), Some(at(40_000)), 10_000).is_some());
    }

    #[test]
    fn reads_a_process_cpu_clock() {
        let me = std::process::id();
        let a = cpu_clock_seconds(&[me]).unwrap();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        let b = cpu_clock_seconds(&[me]).unwrap();
        assert!(b > a, "{a} then {b}");
        // Above the kernel's largest pid_max (2^22): no such process.
        assert_eq!(cpu_clock_seconds(&[me, 1 << 22]), None);
        assert_eq!(cpu_clock_seconds(&[me, u32::MAX >> 1]), None);
    }
}
