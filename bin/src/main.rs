//! The `corecast` binary: settings, logging, signals; then the library does the work.

mod api;
mod cli;
mod pubsub;
mod service;

use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;

use anyhow::Context as _;
use api::{Api, ApiOptions};
use corecast::backend::Hook;
use corecast::{ClusterConfig, Rejection, Server};

use cli::{ApiListen, Settings};

fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("corecast: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(s: Settings) -> anyhow::Result<()> {
    let files = corecast::limits::raise_open_files();
    // Blocked here, before any thread starts, so every thread inherits the mask and the signals
    // wait for `sigwait` below.
    let signals = block_signals();

    let origins = Arc::new(s.origins.clone());
    let authenticated = s.auth.is_some();
    // The connect hook may name the client's user too, with or without tokens.
    let connect_hook = s
        .backend
        .as_ref()
        .is_some_and(|b| b.has_hook(Hook::Connect));
    let mut builder = Server::builder()
        .bind(s.listen)
        .handshake_timeout(s.handshake_timeout)
        .write_coalescing(s.write_coalescing)
        .route_with_config("/ws", s.config.clone(), |_| {})
        // `/ws/:id`: the id becomes the connection's UUID, in the gate below.
        .route_with_config("/ws/:id", s.config.clone(), |_| {})
        .before_upgrade(move |req| {
            if !origins.is_empty() {
                if let Some(origin) = req.header("origin") {
                    if !origins.iter().any(|o| o == origin) {
                        return Err(Rejection::new(403, "origin not allowed"));
                    }
                }
            }
            // The id becomes the UUID during the upgrade (409 if taken; in cluster mode
            // claimed on every node without holding up the shard). With authentication, or a
            // user named by the connect hook, only that user may take it (docs/security.md,
            // "Users and connections").
            if let Some(id) = req.param("id").map(str::to_string) {
                if (authenticated || req.user().is_some()) && req.user() != Some(id.as_str()) {
                    return Err(Rejection::new(403, "the id is not the token's user"));
                }
                req.set_uuid(id);
            }
            Ok(())
        });
    match &s.auth {
        Some(verifier) => builder = builder.authenticate(verifier.clone()),
        // The backend decides who connects.
        None if connect_hook => {}
        None => tracing::warn!(
            "clients are not authenticated: any client may connect, as any id, to any topic \
             (--jwt-secret-file or --jwt-public-key-file turns tokens on)"
        ),
    }
    if let Some(c) = &s.cluster {
        builder = builder.cluster(
            ClusterConfig::nats(&c.url)
                .name(&c.name)
                .node_id(&c.node_id),
        );
    }
    if let Some(n) = s.shards {
        builder = builder.shards(n);
    }
    if let Some(bytes) = s.socket_send_buffer {
        builder = builder.socket_send_buffer(bytes);
    }
    if let Some(n) = s.max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(tls) = &s.tls {
        builder = builder.tls(tls.clone());
    }
    for rule in &s.history {
        tracing::info!(pattern = %rule.pattern, size = rule.size, ttl = ?rule.ttl, "topic history");
        builder = builder.history(&rule.pattern, rule.size, rule.ttl);
    }
    for (pattern, policy) in &s.slow_consumers {
        tracing::info!(%pattern, policy = policy.name(), "slow-consumer policy");
        builder = builder.slow_consumers(pattern, *policy);
    }
    if let Some(backend) = &s.backend {
        tracing::info!(?backend, "application backend");
        builder = builder.backend(backend.clone());
    }
    let server = builder.start().context("cannot start the server")?;
    s.mode.install(&server);
    if authenticated || connect_hook {
        pubsub::join_user_topic(&server);
    }
    let api = match s.api_listen {
        ApiListen::Off => None,
        ApiListen::On(addr) => {
            let options = ApiOptions {
                token: s.api_token.clone(),
                ..ApiOptions::default()
            };
            match Api::start(server.clone(), addr, options) {
                Ok(api) => Some(api),
                Err(e) => {
                    server.shutdown_within(std::time::Duration::ZERO);
                    let _ = server.join();
                    return Err(e).context("cannot start the HTTP API");
                }
            }
        }
    };
    tracing::info!(
        listen = %server.local_addr(),
        shards = server.shard_count(),
        mode = %s.mode,
        open_files = files,
        cluster = %s.cluster.as_ref().map_or("off".to_string(), |c| format!("{}/{}", c.name, c.node_id)),
        api = %api.as_ref().map_or("off".to_string(), |a| a.local_addr().to_string()),
        tls = server.is_tls(),
        auth = authenticated,
        backend = s.backend.is_some(),
        "corecast serving"
    );

    // SIGHUP: read the TLS files again. First other signal: drain (503 to new upgrades and
    // /healthz) for --drain-delay, then close everyone with 1001 and exit. A second one: exit
    // now.
    let (events, next) = mpsc::channel();
    std::thread::spawn({
        let events = events.clone();
        let server = server.clone();
        move || loop {
            let sig = wait_signal(&signals);
            if sig == libc::SIGHUP {
                match server.reload_tls() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                    Err(e) => tracing::warn!(error = %e, "SIGHUP: TLS not reloaded"),
                }
                continue;
            }
            if events.send(Event::Signal(sig)).is_err() {
                return;
            }
        }
    });
    let Ok(Event::Signal(sig)) = next.recv() else {
        anyhow::bail!("signal thread ended");
    };
    server.drain();
    if !s.drain_delay.is_zero() {
        tracing::info!(signal = sig, delay = ?s.drain_delay, "draining");
        match next.recv_timeout(s.drain_delay) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(Event::Signal(sig)) => second_signal(sig),
            Ok(Event::Stopped(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("signal thread ended")
            }
        }
    }
    tracing::info!(signal = sig, timeout = ?s.shutdown_timeout, "shutting down");
    server.shutdown_within(s.shutdown_timeout);
    std::thread::spawn({
        let server = server.clone();
        move || {
            let _ = events.send(Event::Stopped(server.join().map_err(|e| e.to_string())));
        }
    });
    match next.recv() {
        Ok(Event::Stopped(result)) => {
            if let Some(api) = api {
                api.stop();
            }
            result.map_err(anyhow::Error::msg)?;
            tracing::info!("stopped");
            Ok(())
        }
        Ok(Event::Signal(sig)) => second_signal(sig),
        Err(_) => anyhow::bail!("shutdown did not report back"),
    }
}

fn second_signal(sig: i32) -> ! {
    tracing::warn!(signal = sig, "second signal: exiting now");
    std::process::exit(130);
}

enum Event {
    Signal(i32),
    Stopped(Result<(), String>),
}

/// Blocks SIGINT, SIGTERM and SIGHUP on this thread (and the threads it starts later);
/// returns the set for `wait_signal`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` holds signals blocked in every thread; sigwait writes the one taken.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
    sig
}
