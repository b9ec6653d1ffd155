//! The servers under test: how to start each one in a mode on a port, pinned to given CPUs,
//! and how to stop it; a cluster peer is several processes (its nodes and their broker).
//! Not the measuring.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// The corecast binary `--corecast-bin` named, for the whole run.
static CORECAST_BIN: OnceLock<PathBuf> = OnceLock::new();

/// Runs corecast (and its cluster nodes) from `path` instead of `target/release/corecast`: a
/// copy made for the run stays the same while the tree is rebuilt meanwhile.
pub fn use_corecast_binary(path: PathBuf) {
    let _ = CORECAST_BIN.set(path);
}

fn corecast_binary(root: &Path) -> PathBuf {
    CORECAST_BIN
        .get()
        .cloned()
        .unwrap_or_else(|| root.join("target/release/corecast"))
}

/// A server implementation the harness can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Corecast,
    Bun,
    NodeWs,
    Tokio,
    /// The kernel's floor (`bench/peers/floor`): the least a server can do per scenario, one
    /// write per socket per pass, no WebSocket work beyond frame boundaries.
    Floor,
    /// Two corecast nodes in cluster mode and the nats-server between them.
    CorecastCluster,
    /// Two Socket.IO nodes with the Redis adapter and the redis-server between them.
    SocketIoRedis,
    /// One Socket.IO node with connection-state recovery (in-memory adapter), for the
    /// recovery benchmark only.
    SocketIoRecovery,
}

impl Peer {
    pub const ALL: [Peer; 8] = [
        Peer::Corecast,
        Peer::Bun,
        Peer::NodeWs,
        Peer::Tokio,
        Peer::Floor,
        Peer::CorecastCluster,
        Peer::SocketIoRedis,
        Peer::SocketIoRecovery,
    ];

    /// A multi-node peer, run only in cluster scenarios.
    pub fn is_cluster(self) -> bool {
        matches!(self, Peer::CorecastCluster | Peer::SocketIoRedis)
    }

    /// A peer that runs only in the recovery benchmark (it speaks nothing else).
    pub fn is_recovery_only(self) -> bool {
        self == Peer::SocketIoRecovery
    }

    /// Whether it speaks permessage-deflate (tungstenite and the floor do not).
    pub fn has_deflate(self) -> bool {
        !matches!(self, Peer::Tokio | Peer::Floor)
    }

    /// Whether it serves wss (the tokio relay and the floor written here do not).
    pub fn has_tls(self) -> bool {
        !matches!(self, Peer::Tokio | Peer::Floor)
    }

    /// The path clients upgrade at.
    pub fn path(self) -> &'static str {
        match self {
            Peer::SocketIoRedis | Peer::SocketIoRecovery => "/socket.io/?EIO=4&transport=websocket",
            _ => "/ws",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Peer::Corecast => "corecast",
            Peer::Bun => "bun",
            Peer::NodeWs => "node-ws",
            Peer::Tokio => "tokio-tungstenite",
            Peer::Floor => "floor",
            Peer::CorecastCluster => "corecast-2-nodes",
            Peer::SocketIoRedis => "socket.io-redis-2-nodes",
            Peer::SocketIoRecovery => "socket.io",
        }
    }

    pub fn parse(s: &str) -> Option<Peer> {
        Peer::ALL.into_iter().find(|p| {
            p.name() == s
                || (s == "tokio" && *p == Peer::Tokio)
                || (s == "node" && *p == Peer::NodeWs)
        })
    }

    fn command(self, root: &Path, mode: &str, port: u16) -> Command {
        let peers = root.join("bench/peers");
        let mut c = match self {
            Peer::Corecast | Peer::CorecastCluster => {
                let mut c = Command::new(corecast_binary(root));
                c.args([
                    "--mode",
                    mode,
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--api-listen",
                    "off",
                ])
                .args([
                    "--max-message-size",
                    "16MiB",
                    "--send-queue-size",
                    "1024",
                    // The benchmarks' clients send as fast as the server answers, far past
                    // the default 100 messages (and 1 MiB) a second, and the peers have no
                    // such limit.
                    "--client-message-rate",
                    "0",
                    "--client-byte-rate",
                    "0",
                ]);
                c
            }
            Peer::Bun => {
                let mut c = Command::new(peers.join("node_modules/.bin/bun"));
                c.arg(peers.join("bun-server.js"))
                    .args([mode, &port.to_string()]);
                c
            }
            Peer::NodeWs => {
                let mut c = Command::new("node");
                c.arg(peers.join("node-ws-server.js"))
                    .args([mode, &port.to_string()]);
                c
            }
            Peer::SocketIoRedis => {
                let mut c = Command::new("node");
                c.arg(peers.join("socketio-server.js"))
                    .args([mode, &port.to_string()]);
                c
            }
            Peer::SocketIoRecovery => {
                let mut c = Command::new("node");
                c.arg(peers.join("socketio-recovery-server.js"))
                    .args([mode, &port.to_string()]);
                c
            }
            Peer::Tokio => {
                let mut c = Command::new(peers.join("tokio-relay/target/release/tokio-relay"));
                c.args([mode, &port.to_string()]);
                c
            }
            Peer::Floor => {
                let mut c = Command::new(self.executable(root));
                c.args([mode, &port.to_string()]);
                c
            }
        };
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// What the peer does to keep idle connections alive as its users get it by default, and
    /// how long after its connections are up that reaches its steady state within a short
    /// hold (zero where nothing it does falls in one).
    pub fn keepalive(self) -> (&'static str, Duration) {
        match self {
            // The binary's defaults: --ping-interval 25s, the first ping one interval plus a
            // spread share of one after the upgrade; one interval and a second later, every
            // connection pings at its steady rate.
            Peer::Corecast | Peer::CorecastCluster => (
                "pings every 25 s, spread over the interval; drops a client after 75 s of silence (the binary's defaults)",
                Duration::from_secs(26),
            ),
            // Bun.serve's defaults (idleTimeout 120, sendPings true): uWebSockets pings after
            // 104 s without traffic and closes 16 s later, past any short hold; what falls in
            // one is its idle timer, which visits every socket each 4 s.
            Peer::Bun => (
                "idleTimeout 120 s with sendPings (Bun's defaults): a ping after 104 s of silence, none within the window; an idle timer that visits every socket each 4 s",
                Duration::ZERO,
            ),
            Peer::NodeWs => (
                "none: ws sends no pings unless the application codes them",
                Duration::ZERO,
            ),
            // Engine.IO's heartbeat (pingInterval 25 s, pingTimeout 20 s); not in an idle run.
            Peer::SocketIoRedis | Peer::SocketIoRecovery => (
                "an Engine.IO ping every 25 s (Socket.IO's defaults)",
                Duration::from_secs(26),
            ),
            Peer::Tokio => (
                "none: tungstenite answers pings and sends none",
                Duration::ZERO,
            ),
            Peer::Floor => ("none", Duration::ZERO),
        }
    }

    /// What must exist before this peer can run.
    pub fn executable(self, root: &Path) -> PathBuf {
        match self {
            Peer::Corecast => corecast_binary(root),
            Peer::CorecastCluster => PathBuf::from("/usr/sbin/nats-server"),
            Peer::SocketIoRedis | Peer::SocketIoRecovery => {
                root.join("bench/peers/node_modules/socket.io/package.json")
            }
            Peer::Bun => root.join("bench/peers/node_modules/.bin/bun"),
            Peer::NodeWs => root.join("bench/peers/node_modules/ws/package.json"),
            Peer::Tokio => root.join("bench/peers/tokio-relay/target/release/tokio-relay"),
            // A workspace member: built with the rest by bench/run.
            Peer::Floor => root.join("target/release/floor-peer"),
        }
    }
}

/// The keep-alive every scenario but the idle ones gives corecast (its `extra` flags): one
/// ping every 10 s instead of the binary's 25 s. The idle scenarios run it at its defaults.
pub const HARNESS_PING: [&str; 2] = ["--ping-interval", "10s"];

/// A running server, killed on drop: one process, or a cluster's nodes and broker.
pub struct Running {
    children: Vec<Child>,
    /// Where clients connect: one address per node.
    pub addrs: Vec<SocketAddr>,
}

impl Running {
    /// Every process of the server, for its CPU time and memory.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port nobody listens on now: the OS picks it for a socket we close at once, so a server
/// already on the machine is never mistaken for the one under test.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The certificate and key of the TLS scenarios (self-signed, for 127.0.0.1 and localhost),
/// made under `target/bench-tls/` for this run.
pub fn certificate(root: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = root.join("target/bench-tls");
    std::fs::create_dir_all(&dir).context("creating target/bench-tls")?;
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem())?;
    std::fs::write(&key, made.key_pair.serialize_pem())?;
    Ok((cert, key))
}

/// Starts `peer` in `mode`, confined to `cpus`, and waits until it accepts. With `deflate`,
/// it offers permessage-deflate (corecast does by default; the JavaScript peers read
/// `DEFLATE=1`); without, corecast is started with it off, as the peers are. With `tls`, it
/// serves wss with that certificate and key (the JavaScript peers read `TLS_CERT` and
/// `TLS_KEY`). `extra` goes on corecast's command line after the rest (a variant's flags, such
/// as the key file it verifies client tokens with); the other peers take none.
pub fn start(
    peer: Peer,
    root: &Path,
    mode: &str,
    deflate: bool,
    tls: Option<&(PathBuf, PathBuf)>,
    cpus: &[usize],
    extra: &[String],
) -> anyhow::Result<Running> {
    if !extra.is_empty() && !matches!(peer, Peer::Corecast | Peer::CorecastCluster) {
        bail!("{} takes no extra flags", peer.name());
    }
    if !peer.is_cluster() {
        let port = free_port()?;
        let mut cmd = peer.command(root, mode, port);
        cmd.args(extra);
        if peer == Peer::Corecast {
            cmd.args(["--deflate", if deflate { "on" } else { "off" }]);
        } else if deflate {
            cmd.env("DEFLATE", "1");
        }
        if let Some((cert, key)) = tls {
            if peer == Peer::Corecast {
                cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
            } else {
                cmd.env("TLS_CERT", cert).env("TLS_KEY", key);
            }
        }
        let (child, addr) = start_one(peer, cmd, port, cpus)?;
        return Ok(Running {
            children: vec![child],
            addrs: vec![addr],
        });
    }
    // The broker first (nats-server or redis-server), then two nodes joined through it.
    let mut running = Running {
        children: Vec::new(),
        addrs: Vec::new(),
    };
    let broker_port = free_port()?;
    let port_arg = broker_port.to_string();
    let mut broker = if peer == Peer::CorecastCluster {
        let mut c = Command::new("nats-server");
        c.args(["-a", "127.0.0.1", "-p", &port_arg]);
        c
    } else {
        let mut c = Command::new("redis-server");
        c.args(["--port", &port_arg, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"]);
        c
    };
    broker
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (child, _) = start_one(peer, broker, broker_port, cpus)?;
    running.children.push(child);
    for node in ["a", "b"] {
        let port = free_port()?;
        let mut cmd = peer.command(root, mode, port);
        if peer == Peer::CorecastCluster {
            cmd.args(["--cluster", &format!("nats://127.0.0.1:{broker_port}")])
                .args(["--cluster-name", "bench", "--node-id", node])
                .args(extra);
        } else {
            cmd.arg(&port_arg);
        }
        let (child, addr) = start_one(peer, cmd, port, cpus)?;
        running.children.push(child);
        running.addrs.push(addr);
    }
    Ok(running)
}

/// Starts one process of a peer, confined to `cpus`, and waits until `port` accepts.
fn start_one(
    peer: Peer,
    mut cmd: Command,
    port: u16,
    cpus: &[usize],
) -> anyhow::Result<(Child, SocketAddr)> {
    let cpus = cpus.to_vec();
    // SAFETY: between fork and exec only async-signal-safe calls: sched_setaffinity on a
    // stack-built set.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for c in &cpus {
                libc::CPU_SET(*c, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", peer.name()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let end = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{} exited at start: {status}", peer.name());
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} is not accepting on {addr} after 15 s", peer.name());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, addr))
}
