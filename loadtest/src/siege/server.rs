//! The server under siege: the real `corecast` binary started as a child process on a free
//! loopback port, with the timeouts the siege documents, and its memory and open files read
//! from procfs. Not the attacks, and not a supervisor: a server that dies stays dead.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::procstat;

/// The limits the siege starts every server with, so each attack's documented answer (and how
/// long it may take) is known. Shorter than the defaults so a run ends in minutes; the
/// answers are the same with the defaults, only later.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub ping_interval: Duration,
    /// Three ping intervals: the server's default rule.
    pub read_idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_message_size: usize,
}

impl Limits {
    pub const SIEGE: Limits = Limits {
        handshake_timeout: Duration::from_secs(2),
        ping_interval: Duration::from_secs(1),
        read_idle_timeout: Duration::from_secs(3),
        write_timeout: Duration::from_secs(2),
        max_message_size: 64 * 1024,
    };

    /// The binary's own defaults (what the soak runs with): pings every 25 s, idle after 75 s.
    pub const DEFAULTS: Limits = Limits {
        handshake_timeout: Duration::from_secs(5),
        ping_interval: Duration::from_secs(25),
        read_idle_timeout: Duration::from_secs(75),
        write_timeout: Duration::from_secs(10),
        max_message_size: 1 << 20,
    };

    /// The longest any connection may outlive its attacker's last byte under these limits.
    pub fn teardown_bound(&self) -> Duration {
        self.handshake_timeout
            .max(self.read_idle_timeout)
            .max(self.write_timeout)
            + Duration::from_secs(2)
    }

    fn args(&self) -> Vec<String> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        vec![
            "--handshake-timeout".into(),
            ms(self.handshake_timeout),
            "--ping-interval".into(),
            ms(self.ping_interval),
            "--read-idle-timeout".into(),
            ms(self.read_idle_timeout),
            "--write-timeout".into(),
            ms(self.write_timeout),
            "--max-message-size".into(),
            self.max_message_size.to_string(),
        ]
    }
}

/// How the siege splits this machine's CPUs: the server (and the healthy client, which needs
/// little) on the upper half, the attackers on the lower half, as if they came from other
/// machines. Without the split an attacker thread inside a long `write` holds the CPU a pinned
/// shard needs, and the healthy client measures the scheduler instead of the server. With one
/// CPU both halves are that CPU.
#[derive(Debug, Clone)]
pub struct Cpus {
    pub server: Vec<usize>,
    pub attackers: Vec<usize>,
}

impl Cpus {
    pub fn split() -> Cpus {
        let allowed = allowed_cpus();
        if allowed.len() < 2 {
            return Cpus {
                server: allowed.clone(),
                attackers: allowed,
            };
        }
        let (low, high) = allowed.split_at(allowed.len() / 2);
        Cpus {
            server: high.to_vec(),
            attackers: low.to_vec(),
        }
    }
}

/// A loopback address whose port was free a moment ago.
fn free_port() -> std::io::Result<SocketAddr> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    Ok(([127, 0, 0, 1], port).into())
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Restricts the calling thread (and threads it spawns later) to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within its size for indices below
    // CPU_SETSIZE; sched_setaffinity only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What a server is started with beyond its mode and limits: the attacks on authentication and
/// on the inbound rate limit need more than the others.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// `--client-message-rate`; `None`: no inbound limit at all (the message and byte rates 0).
    pub message_rate: Option<u32>,
    /// More arguments, such as the token key's flag pair (`TokenKey::server_args`).
    pub args: Vec<String>,
    /// Serve the HTTP API on a free loopback port, so `/metrics` can be read.
    pub api: bool,
}

/// A running `corecast` child process; killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The HTTP API (`/metrics`), when `Extras::api` asked for it.
    pub api: Option<SocketAddr>,
}

impl ServerProcess {
    /// Starts `binary --mode <mode>` on a free port, on `cpus` (it runs one shard per CPU it
    /// may use), with no inbound rate limit, and waits (bounded) until it accepts.
    pub fn start(
        binary: &Path,
        mode: &str,
        limits: &Limits,
        cpus: &[usize],
    ) -> anyhow::Result<ServerProcess> {
        Self::start_with(binary, mode, limits, cpus, &Extras::default())
    }

    /// Starts the server like `start`, with `extras`.
    pub fn start_with(
        binary: &Path,
        mode: &str,
        limits: &Limits,
        cpus: &[usize],
        extras: &Extras,
    ) -> anyhow::Result<ServerProcess> {
        let addr = free_port()?;
        let api = extras.api.then(free_port).transpose()?;
        let api_listen = api.map_or("off".to_string(), |a| a.to_string());
        let rate_limit: Vec<String> = match extras.message_rate {
            // No inbound rate limit: the healthy client sends 100 messages a second and the
            // soak's probe publishes `--rate` a second (100 by default), at or above the
            // binary's default of 100, and only the attacks on the limit flood messages.
            None => vec![
                "--client-message-rate".into(),
                "0".into(),
                "--client-byte-rate".into(),
                "0".into(),
            ],
            Some(n) => vec!["--client-message-rate".into(), n.to_string()],
        };
        let cpus = cpus.to_vec();
        let mut command = Command::new(binary);
        // SAFETY: the closure only makes system calls (prctl, sched_setaffinity), which are
        // async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                // The server goes with the siege, even when the siege is killed.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                pin_current_thread(&cpus)
            });
        }
        let child = command
            .args([
                "--listen",
                &addr.to_string(),
                "--mode",
                mode,
                "--api-listen",
                &api_listen,
            ])
            .args(limits.args())
            .args(rate_limit)
            .args(&extras.args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = ServerProcess { child, addr, api };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("{} exited at start: {status}", binary.display());
            }
            if Instant::now() > deadline {
                bail!("{} did not accept on {addr} within 10 s", binary.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory in KiB, 0 once the process is gone.
    pub fn rss_kib(&self) -> u64 {
        procstat::rss_kib(&[self.pid()]).unwrap_or(0)
    }

    /// Open file descriptors, 0 once the process is gone.
    pub fn fds(&self) -> usize {
        procstat::open_fds(self.pid()).unwrap_or(0)
    }

    /// CPU seconds used so far.
    pub fn cpu_seconds(&self) -> f64 {
        procstat::cpu_seconds(&[self.pid()]).unwrap_or(0.0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The counters of the server whose HTTP API is at `api`, read from `/metrics`, each series by
/// its full name (`corecast_auth_refusals_total{cause="expired"}`); gauges and summaries too,
/// as whole numbers.
pub fn metrics(api: SocketAddr) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut stream = TcpStream::connect_timeout(&api, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("/metrics answered no HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("/metrics answered {}", head.lines().next().unwrap_or(""));
    }
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse::<f64>().ok()? as u64))
        })
        .collect())
}
