//! `corecast-many-nodes`: many processes on one machine. Starts one nats-server, N `corecast`
//! nodes in cluster mode (`--mode pubsub --shards 1`, the binary's defaults otherwise) and N
//! `corecast-load listen` generators (one per node), all on 127.0.0.1 with ports found at run
//! time; holds every connection for `--duration`, sending a broadcast and a publication through
//! one node's API every `--every` and once at the end; then reads what each generator counted
//! and each node's `/metrics`, prints a summary, writes `<date>-many-nodes.{json,md}` and exits
//! 1 when a client was dropped or a delivery missing. Not a benchmark of throughput: it shows
//! that the connections stay up and every message arrives. `bench/many-nodes.sh` builds and
//! runs it.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use corecast::units::parse_duration;
use corecast_load::listen::ledger::{self, Stream};
use corecast_load::listen::HOLDING;
use corecast_load::many_nodes::{
    causes, growth, http, markdown, serving_addresses, thousands, Counted, Deliveries,
    GeneratorResult, Host, ManyNodesResult, Metrics, NodeResult, Parameters, ProcessUse,
};
use corecast_load::{payload, procstat};

/// N cluster nodes and N generators on one machine, every connection held and every
/// broadcast and publication counted.
#[derive(Parser, Debug)]
#[command(name = "corecast-many-nodes", version)]
struct Args {
    /// corecast nodes, and generators (one per node)
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Clients per node (one generator each)
    #[arg(long, default_value_t = 15_000)]
    clients: usize,
    /// How long to hold every connection
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// A broadcast and a publication every this long during the hold (and once at its end)
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    every: Duration,
    /// A progress report every this long
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    progress: Duration,
    /// The topic every client subscribes to
    #[arg(long, default_value = "everyone")]
    topic: String,
    /// Where `corecast` and `corecast-load` are [default: this program's folder]
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The nats-server to run
    #[arg(long, default_value = "nats-server")]
    nats_server: String,
    /// Where the result files go
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Where every process's log goes [default: a new folder under the temporary folder]
    #[arg(long)]
    logs: Option<PathBuf>,
    /// The most the generators may take to connect, and to finish after the ends are sent
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    grace: Duration,
}

/// The open-file limit each process runs under: this machine's per-process limit.
const OPEN_FILES: u64 = 20_000;

/// A child process, killed when dropped unless it has exited; it is also killed if this
/// program dies (`PR_SET_PDEATHSIG`), so an interrupted run leaves nothing behind.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Proc> {
        // SAFETY: prctl in the child before exec touches no state of this process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit code, if it has exited (`Some(None)`: by a signal).
    fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|s| s.code())
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `within`.
    fn stop(&mut self, within: Duration) {
        if self.exited().is_some() {
            return;
        }
        self.signal(libc::SIGTERM);
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("many-nodes: {} did not stop in time; killed", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A cluster node: its process and addresses.
struct Node {
    id: String,
    proc: Proc,
    ws: SocketAddr,
    api: SocketAddr,
}

impl Node {
    fn metrics(&self) -> anyhow::Result<Metrics> {
        let (status, body) = http(self.api, "GET", "/metrics", b"", Duration::from_secs(10))
            .with_context(|| format!("{}: GET /metrics", self.id))?;
        if status != 200 {
            bail!("{}: GET /metrics answered {status}", self.id);
        }
        Ok(Metrics::parse(&body))
    }
}

/// A generator: its process, the node it loads, its log and report files.
struct Generator {
    node: String,
    proc: Proc,
    log: PathBuf,
    json: PathBuf,
    max_fds: usize,
    exit: Option<Option<i32>>,
}

impl Generator {
    /// The last line of its log.
    fn last_line(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .last()
            .unwrap_or("")
            .to_string()
    }

    fn holding(&self) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains(HOLDING))
    }
}

/// Lowers (or raises) the open-file limit to `OPEN_FILES`, under the hard limit; children
/// inherit it. Returns the limit in force.
fn set_open_files() -> u64 {
    // SAFETY: getrlimit/setrlimit on this process with a local struct.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        let want = libc::rlimit {
            rlim_cur: OPEN_FILES.min(l.rlim_max),
            rlim_max: l.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            want.rlim_cur
        } else {
            l.rlim_cur
        }
    }
}

/// A port nothing listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_string()
        })
        .unwrap_or_else(|| "?".into())
}

/// Files under `src/` and `bin/` that differ from HEAD, untracked ones included.
fn uncommitted() -> Vec<String> {
    let lines = |args: &[&str]| -> Vec<String> {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut files = lines(&["diff", "--name-only", "HEAD", "--", "src", "bin"]);
    files.extend(lines(&[
        "ls-files",
        "-o",
        "--exclude-standard",
        "--",
        "src",
        "bin",
    ]));
    files
}

fn host(nats: &str, files: u64) -> Host {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    Host {
        cpu,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        linux: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        open_files_limit: files,
        nats_server: sh(nats, &["--version"]),
    }
}

/// One node: started, and its addresses read from its "corecast serving" line.
fn start_node(
    corecast: &Path,
    n: usize,
    flags: &[String],
    nats_port: u16,
    cluster: &str,
    logs: &Path,
) -> anyhow::Result<Node> {
    let id = format!("node-{n}");
    let mut cmd = Command::new(corecast);
    cmd.args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .args(flags)
        .args(["--cluster", &format!("nats://127.0.0.1:{nats_port}")])
        .args(["--cluster-name", cluster, "--node-id", &id])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn(&id, cmd)?;
    let stderr = proc.child.stderr.take().context("the node's stderr")?;
    let mut log = File::create(logs.join(format!("{id}.log")))?;
    let (tx, rx) = mpsc::channel();
    // Copies the node's log to its file for the whole run, passing on the serving line.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if let Some(addrs) = serving_addresses(&line) {
                let _ = tx.send(addrs);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok((ws, Some(api))) => Ok(Node { id, proc, ws, api }),
        Ok((_, None)) => bail!("{id} serves no API"),
        Err(_) => bail!(
            "{id} did not log \"corecast serving\" within 30 s (see {})",
            logs.join(format!("{id}.log")).display()
        ),
    }
}

/// Sends message `seq` of `stream` (or its end, after `seq` messages) through `node`'s API.
fn send(node: &Node, topic: &str, stream: Stream, body: String) -> Result<(), String> {
    let path = match stream {
        Stream::Broadcast => "/api/broadcast".to_string(),
        Stream::Publication => format!("/api/publish/{topic}"),
    };
    match http(
        node.api,
        "POST",
        &path,
        body.as_bytes(),
        Duration::from_secs(10),
    ) {
        Ok((200, _)) => Ok(()),
        Ok((status, answer)) => Err(format!(
            "POST {path} to {} answered {status}: {answer:.120}",
            node.id
        )),
        Err(e) => Err(format!("POST {path} to {}: {e}", node.id)),
    }
}

/// CPU seconds of each process, `None` where one is gone.
fn cpu_of(pids: &[u32]) -> Vec<Option<f64>> {
    pids.iter().map(|&p| procstat::cpu_seconds(&[p])).collect()
}

fn usage(pid: u32, before: Option<f64>, hold: f64, max_fds: usize) -> ProcessUse {
    let cpu = match (before, procstat::cpu_seconds(&[pid])) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    ProcessUse {
        pid,
        cpu_seconds: cpu,
        cpu_percent: 100.0 * cpu / hold.max(1e-9),
        rss_kib: procstat::rss_kib(&[pid]).unwrap_or(0),
        max_open_files: max_fds,
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(result) => {
            if result.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("many-nodes: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ManyNodesResult> {
    if args.nodes == 0 || args.clients == 0 || args.every.is_zero() {
        bail!("--nodes, --clients and --every must be more than 0");
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this program has no folder")?
            .to_path_buf(),
    };
    let (corecast, load) = (bin_dir.join("corecast"), bin_dir.join("corecast-load"));
    for b in [&corecast, &load] {
        if !b.is_file() {
            bail!(
                "no {} (build it: cargo build --release -p corecast-bin -p corecast-load)",
                b.display()
            );
        }
    }
    let logs = match &args.logs {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("corecast-many-nodes-{}", std::process::id())),
    };
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    // What the binaries were built from: read now, as others may commit while this runs.
    let commit = sh("git", &["rev-parse", "--short", "HEAD"]);
    let uncommitted = uncommitted();
    let files = set_open_files();
    let clients_total = args.nodes * args.clients;
    if (args.clients as u64) + 100 > files {
        bail!(
            "{} clients per process do not fit under the open-file limit of {files}",
            args.clients
        );
    }
    let say = |line: String| println!("many-nodes: {line}");
    say(format!(
        "{} nodes × {} clients = {} connections, hold {:.0}s, send every {:.0}s; logs in {}; \
         open-file limit {files} per process",
        args.nodes,
        args.clients,
        thousands(clients_total as u64),
        args.duration.as_secs_f64(),
        args.every.as_secs_f64(),
        logs.display()
    ));

    // nats-server, with JetStream (cluster mode keeps its UUID claims there).
    let nats_port = free_port()?;
    let mut nats_cmd = Command::new(&args.nats_server);
    nats_cmd
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &nats_port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(logs.join("nats-store"))
        .stdin(Stdio::null())
        .stdout(File::create(logs.join("nats.log"))?)
        .stderr(File::create(logs.join("nats.err"))?);
    let mut nats = Proc::spawn("nats-server", nats_cmd)?;
    if !wait_port(nats_port, Duration::from_secs(10)) {
        bail!("nats-server did not listen on {nats_port} within 10 s");
    }
    let host = host(&args.nats_server, files);

    let node_flags: Vec<String> = ["--mode", "pubsub", "--shards", "1"]
        .map(String::from)
        .to_vec();
    let cluster = format!("many-nodes-{}", std::process::id());
    let mut nodes = Vec::new();
    let mut rss_before = Vec::new();
    for n in 0..args.nodes {
        let node = start_node(&corecast, n, &node_flags, nats_port, &cluster, &logs)?;
        rss_before.push(procstat::rss_kib(&[node.proc.pid()]).unwrap_or(0));
        say(format!(
            "{} serves ws://{}/ws, API http://{} (pid {})",
            node.id,
            node.ws,
            node.api,
            node.proc.pid()
        ));
        nodes.push(node);
    }

    // The generators, one per node; each holds at most the hold and its grace.
    let started = Instant::now();
    let mut gens = Vec::new();
    for node in &nodes {
        let log = logs.join(format!("load-{}.log", node.id));
        let json = logs.join(format!("load-{}.json", node.id));
        let mut cmd = Command::new(&load);
        cmd.arg("listen")
            .args(["--url", &format!("ws://{}/ws", node.ws)])
            .args(["--clients", &args.clients.to_string()])
            .args(["--topic", &args.topic])
            .args([
                "--duration",
                &format!("{}s", (args.duration + args.grace * 2).as_secs()),
            ])
            .arg("--json")
            .arg(&json)
            .stdin(Stdio::null())
            .stdout(File::create(logs.join(format!("load-{}.out", node.id)))?)
            .stderr(File::create(&log)?);
        gens.push(Generator {
            node: node.id.clone(),
            proc: Proc::spawn(&format!("generator of {}", node.id), cmd)?,
            log,
            json,
            max_fds: 0,
            exit: None,
        });
    }

    // Connecting: progress from each node's /metrics until every generator holds.
    let mut last_print = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if gens.iter().all(Generator::holding) {
            break;
        }
        for g in gens.iter_mut() {
            if let Some(code) = g.proc.exited() {
                bail!(
                    "the generator of {} exited ({code:?}) while connecting: {}",
                    g.node,
                    g.last_line()
                );
            }
        }
        if started.elapsed() > args.grace {
            bail!(
                "the generators did not connect within {:.0}s",
                args.grace.as_secs_f64()
            );
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            last_print = Instant::now();
            let per_node: Vec<String> = nodes
                .iter()
                .map(|n| match n.metrics() {
                    Ok(m) => format!(
                        "{} {}/{}",
                        n.id,
                        m.sum("corecast_subscriptions"),
                        args.clients
                    ),
                    Err(_) => format!("{} ?", n.id),
                })
                .collect();
            say(format!(
                "connecting {:>5.1}s: subscribed {}",
                started.elapsed().as_secs_f64(),
                per_node.join(", ")
            ));
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    say(format!(
        "every generator holds its connections after {connect_seconds:.1}s"
    ));

    // The hold.
    let node_pids: Vec<u32> = nodes.iter().map(|n| n.proc.pid()).collect();
    let gen_pids: Vec<u32> = gens.iter().map(|g| g.proc.pid()).collect();
    let start_metrics: Vec<Metrics> = nodes
        .iter()
        .map(Node::metrics)
        .collect::<anyhow::Result<_>>()?;
    let node_cpu = cpu_of(&node_pids);
    let gen_cpu = cpu_of(&gen_pids);
    let nats_cpu = procstat::cpu_seconds(&[nats.pid()]);
    let mut nats_fds = 0;
    let mut node_fds = vec![0usize; nodes.len()];
    let mut failures: Vec<String> = Vec::new();
    let mut sent = [0u64; 2];
    let sender = &nodes[0];
    let send_both = |sent: &mut [u64; 2], failures: &mut Vec<String>| {
        for stream in Stream::ALL {
            let s = stream.index();
            let body = ledger::message(stream, sent[s], payload::now_ns());
            match send(sender, &args.topic, stream, body) {
                Ok(()) => sent[s] += 1,
                Err(e) => failures.push(e),
            }
        }
    };
    let t0 = Instant::now();
    let mut next_send = t0;
    let mut next_print = t0;
    loop {
        let now = Instant::now();
        if now >= t0 + args.duration {
            break;
        }
        if now >= next_send {
            send_both(&mut sent, &mut failures);
            next_send += args.every;
        }
        if now >= next_print {
            next_print += args.progress;
            for (n, most) in nodes.iter().zip(node_fds.iter_mut()) {
                *most = (*most).max(procstat::open_fds(n.proc.pid()).unwrap_or(0));
            }
            for g in gens.iter_mut() {
                g.max_fds = g.max_fds.max(procstat::open_fds(g.proc.pid()).unwrap_or(0));
            }
            nats_fds = nats_fds.max(procstat::open_fds(nats.pid()).unwrap_or(0));
            say(format!(
                "hold {:>4.0}s of {:.0}s: {} broadcasts and {} publications sent",
                t0.elapsed().as_secs_f64(),
                args.duration.as_secs_f64(),
                sent[0],
                sent[1]
            ));
            for (i, n) in nodes.iter().enumerate() {
                let line = match n.metrics() {
                    Ok(m) => format!(
                        "{}: held {}, upgrades {}, teardowns in the hold: {}, RSS {} MiB",
                        n.id,
                        thousands(m.sum("corecast_connections")),
                        thousands(m.sum("corecast_upgrades_total")),
                        causes(&growth(
                            &start_metrics[i].by("corecast_teardowns_total", "cause"),
                            &m.by("corecast_teardowns_total", "cause"),
                        )),
                        procstat::rss_kib(&[n.proc.pid()]).unwrap_or(0) / 1024,
                    ),
                    Err(e) => format!("{}: {e:#}", n.id),
                };
                say(format!("  {line}"));
            }
            for g in gens.iter_mut() {
                if let Some(code) = g.proc.exited() {
                    if g.exit.is_none() {
                        g.exit = Some(code);
                        failures.push(format!(
                            "the generator of {} exited ({code:?}) during the hold",
                            g.node
                        ));
                    }
                }
                say(format!("  load {}: {}", g.node, g.last_line()));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once at the end, then the state of the hold, then the ends.
    send_both(&mut sent, &mut failures);
    let hold_seconds = t0.elapsed().as_secs_f64();
    let end_metrics: Vec<anyhow::Result<Metrics>> = nodes.iter().map(Node::metrics).collect();
    let mut node_results = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let end = match &end_metrics[i] {
            Ok(m) => m.clone(),
            Err(e) => {
                failures.push(format!("{e:#}"));
                Metrics::default()
            }
        };
        let start = &start_metrics[i];
        let grew = |name: &str| end.sum(name).saturating_sub(start.sum(name));
        let held = end.sum("corecast_connections");
        let use_ = usage(n.proc.pid(), node_cpu[i], hold_seconds, node_fds[i]);
        node_results.push(NodeResult {
            id: n.id.clone(),
            listen: n.ws.to_string(),
            api: n.api.to_string(),
            connections_at_start: start.sum("corecast_connections"),
            connections_at_end: held,
            subscriptions_at_end: end.sum("corecast_subscriptions"),
            upgrades: end.sum("corecast_upgrades_total"),
            teardowns_in_hold: growth(
                &start.by("corecast_teardowns_total", "cause"),
                &end.by("corecast_teardowns_total", "cause"),
            ),
            dropped_in_hold: growth(
                &start.by("corecast_dropped_messages_total", "cause"),
                &end.by("corecast_dropped_messages_total", "cause"),
            ),
            messages_out_in_hold: grew("corecast_messages_out_total"),
            publish_deliveries_in_hold: grew("corecast_publish_deliveries_total"),
            cluster_dropped_in_hold: grew("corecast_cluster_messages_dropped_total"),
            cpu_us_per_connection_second: use_.cpu_seconds * 1e6
                / (held.max(1) as f64 * hold_seconds),
            rss_kib_before: rss_before[i],
            rss_bytes_per_connection: use_.rss_kib.saturating_sub(rss_before[i]) as f64 * 1024.0
                / held.max(1) as f64,
            usage: use_,
        });
    }
    let nats_use = usage(nats.pid(), nats_cpu, hold_seconds, nats_fds);
    let gen_use: Vec<ProcessUse> = gens
        .iter()
        .enumerate()
        .map(|(i, g)| usage(g.proc.pid(), gen_cpu[i], hold_seconds, g.max_fds))
        .collect();
    for stream in Stream::ALL {
        if let Err(e) = send(
            sender,
            &args.topic,
            stream,
            ledger::end(stream, sent[stream.index()]),
        ) {
            failures.push(format!("the end could not be sent: {e}"));
        }
    }
    say(format!(
        "hold over after {hold_seconds:.1}s: {} broadcasts and {} publications sent, ends \
         sent; waiting for the generators",
        sent[0], sent[1]
    ));

    // The generators end once every client has both ends.
    let wait_end = Instant::now() + args.grace;
    let mut last_print = Instant::now();
    while gens.iter_mut().any(|g| g.proc.exited().is_none()) && Instant::now() < wait_end {
        std::thread::sleep(Duration::from_millis(100));
        if last_print.elapsed() >= args.progress {
            last_print = Instant::now();
            for g in &gens {
                say(format!("  load {}: {}", g.node, g.last_line()));
            }
        }
    }
    let mut gen_results = Vec::new();
    let mut reports: Vec<Counted> = Vec::new();
    for (g, use_) in gens.iter_mut().zip(gen_use) {
        let exit = match g.proc.exited() {
            Some(code) => code,
            None => {
                failures.push(format!(
                    "the generator of {} had not ended {:.0}s after the ends were sent",
                    g.node,
                    args.grace.as_secs_f64()
                ));
                g.proc.stop(Duration::from_secs(5));
                None
            }
        };
        let report: Option<serde_json::Value> = std::fs::read_to_string(&g.json)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let counted = report
            .clone()
            .and_then(|r| serde_json::from_value::<Counted>(r).ok());
        match counted {
            None => failures.push(format!(
                "the generator of {} wrote no report (exit {exit:?}; log {})",
                g.node,
                g.log.display()
            )),
            Some(r) => {
                if !r.ok {
                    failures.push(format!(
                        "the generator of {} counted {} faults; the first: {}",
                        g.node,
                        r.fault_count,
                        r.faults.first().map_or("?", String::as_str)
                    ));
                }
                reports.push(r);
            }
        }
        gen_results.push(GeneratorResult {
            node: g.node.clone(),
            exit_code: exit,
            usage: use_,
            report,
        });
    }
    // What the clients' close did, for the log.
    for n in &nodes {
        if let Ok(m) = n.metrics() {
            say(format!(
                "{} after the generators closed: held {}, teardowns in all: {}",
                n.id,
                thousands(m.sum("corecast_connections")),
                causes(&m.by("corecast_teardowns_total", "cause"))
            ));
        }
    }
    for n in nodes.iter_mut() {
        n.proc.stop(Duration::from_secs(15));
    }
    nats.stop(Duration::from_secs(5));

    for n in &node_results {
        let dropped: u64 = n.teardowns_in_hold.values().sum();
        if dropped > 0 || n.connections_at_end != args.clients as u64 {
            failures.push(format!(
                "{}: held {} of {} at the end of the hold; torn down in the hold: {}",
                n.id,
                thousands(n.connections_at_end),
                thousands(args.clients as u64),
                causes(&n.teardowns_in_hold)
            ));
        }
    }
    let deliveries = Deliveries::of(sent[0], sent[1], clients_total as u64, &reports);
    if reports.len() == gens.len()
        && (deliveries.broadcasts_counted != deliveries.broadcasts_expected
            || deliveries.publications_counted != deliveries.publications_expected)
    {
        failures.push(format!(
            "the generators counted {} of {} broadcast deliveries and {} of {} publication \
             deliveries",
            thousands(deliveries.broadcasts_counted),
            thousands(deliveries.broadcasts_expected),
            thousands(deliveries.publications_counted),
            thousands(deliveries.publications_expected)
        ));
    }
    let result = ManyNodesResult {
        id: "many-nodes".into(),
        date: sh("date", &["+%Y-%m-%d"]),
        commit,
        uncommitted,
        host,
        parameters: Parameters {
            nodes: args.nodes,
            clients_per_node: args.clients,
            hold_seconds: args.duration.as_secs_f64(),
            send_every_seconds: args.every.as_secs_f64(),
            topic: args.topic.clone(),
            node_flags,
        },
        connect_seconds,
        hold_seconds,
        nodes: node_results,
        nats: nats_use,
        generators: gen_results,
        deliveries,
        ok: failures.is_empty(),
        failures,
    };
    let md = markdown(&result);
    println!("\n{md}");
    std::fs::create_dir_all(&args.out)?;
    let base = args.out.join(format!("{}-many-nodes", result.date));
    let json = serde_json::to_string_pretty(&result)? + "\n";
    std::fs::write(base.with_extension("json"), json)?;
    std::fs::write(base.with_extension("md"), md)?;
    say(format!(
        "{}: {}.json and .md written; logs in {}",
        if result.ok { "OK" } else { "FAILED" },
        base.display(),
        logs.display()
    ));
    Ok(result)
}
