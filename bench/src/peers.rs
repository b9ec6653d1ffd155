//! The servers under test: how to start each one in a mode on a port, pinned to given CPUs,
//! and how to stop it. Not the measuring.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A server implementation the harness can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Corecast,
    Bun,
    NodeWs,
    Tokio,
}

impl Peer {
    pub const ALL: [Peer; 4] = [Peer::Corecast, Peer::Bun, Peer::NodeWs, Peer::Tokio];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Corecast => "corecast",
            Peer::Bun => "bun",
            Peer::NodeWs => "node-ws",
            Peer::Tokio => "tokio-tungstenite",
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
            Peer::Corecast => {
                let mut c = Command::new(root.join("target/release/corecast"));
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
                    "--ping-interval",
                    "10s",
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
            Peer::Tokio => {
                let mut c = Command::new(peers.join("tokio-relay/target/release/tokio-relay"));
                c.args([mode, &port.to_string()]);
                c
            }
        };
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// What must exist before this peer can run.
    pub fn executable(self, root: &Path) -> PathBuf {
        match self {
            Peer::Corecast => root.join("target/release/corecast"),
            Peer::Bun => root.join("bench/peers/node_modules/.bin/bun"),
            Peer::NodeWs => root.join("bench/peers/node_modules/ws/package.json"),
            Peer::Tokio => root.join("bench/peers/tokio-relay/target/release/tokio-relay"),
        }
    }
}

/// A running server, killed on drop.
pub struct Running {
    child: Child,
    pub addr: SocketAddr,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on now: the OS picks it for a socket we close at once, so a server
/// already on the machine is never mistaken for the one under test.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Starts `peer` in `mode` on `port`, confined to `cpus`, and waits until it accepts.
pub fn start(
    peer: Peer,
    root: &Path,
    mode: &str,
    port: u16,
    cpus: &[usize],
) -> anyhow::Result<Running> {
    let mut cmd = peer.command(root, mode, port);
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
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", peer.name()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut running = Running { child, addr };
    let end = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = running.child.try_wait()? {
            bail!("{} exited at start: {status}", peer.name());
        }
        if Instant::now() > end {
            bail!("{} is not accepting on {addr} after 15 s", peer.name());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(running)
}
