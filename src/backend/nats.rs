//! The NATS events thread: publishes the events shards forward to NATS, each on
//! `<subject>.<type>`. One per server, with its own connection; not cluster mode's link
//! (`cluster::link`), which carries cross-node work.

use std::thread::JoinHandle;
use std::time::Duration;

use super::link::NatsEvent;
use super::NatsEvents;
use crate::Error;

/// How long the server waits at start for NATS to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running thread; `stop` ends it after what is queued went out.
pub(crate) struct NatsEventsThread {
    stop: Option<flume::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NatsEventsThread {
    /// Connects to NATS and starts publishing what arrives on the returned queue, which holds
    /// at most `capacity` events (shards drop and count what does not fit).
    pub(crate) fn start(
        cfg: &NatsEvents,
        capacity: usize,
    ) -> Result<(NatsEventsThread, flume::Sender<NatsEvent>), Error> {
        let (tx, rx) = flume::bounded::<NatsEvent>(capacity);
        let (stop, stopped) = flume::bounded::<()>(1);
        let (ready, started) = flume::bounded::<Result<(), Error>>(1);
        let url = cfg.url.clone();
        let thread = std::thread::Builder::new()
            .name("corecast-events".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(rt) => rt.block_on(run(url, rx, stopped, ready)),
                    Err(e) => {
                        let _ = ready.send(Err(unreachable("", e)));
                    }
                }
            })
            .map_err(|e| Error::Config(format!("cannot start the NATS events thread: {e}")))?;
        let mut running = NatsEventsThread {
            stop: Some(stop),
            thread: Some(thread),
        };
        match started.recv_timeout(CONNECT_TIMEOUT + Duration::from_secs(2)) {
            Ok(Ok(())) => Ok((running, tx)),
            Ok(Err(e)) => {
                running.stop();
                Err(e)
            }
            Err(_) => {
                running.stop();
                Err(unreachable(&cfg.url, "no answer in time"))
            }
        }
    }

    /// Ends the thread once what is queued was handed to NATS, and waits for it.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for NatsEventsThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unreachable(url: &str, why: impl std::fmt::Display) -> Error {
    Error::Config(format!("events: cannot reach NATS at {url}: {why}"))
}

async fn run(
    url: String,
    events: flume::Receiver<NatsEvent>,
    stop: flume::Receiver<()>,
    ready: flume::Sender<Result<(), Error>>,
) {
    let options = async_nats::ConnectOptions::new()
        .name("corecast events")
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None);
    let client = match tokio::time::timeout(CONNECT_TIMEOUT, options.connect(&url)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            let _ = ready.send(Err(unreachable(&url, e)));
            return;
        }
        Err(_) => {
            let _ = ready.send(Err(unreachable(&url, "no connection in time")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    tracing::info!(%url, "events go to NATS");
    loop {
        tokio::select! {
            event = events.recv_async() => match event {
                Ok((subject, body)) => publish(&client, subject, body).await,
                Err(_) => break,
            },
            _ = stop.recv_async() => {
                // What shards queued before the stop still goes out.
                while let Ok((subject, body)) = events.try_recv() {
                    publish(&client, subject, body).await;
                }
                break;
            }
        }
    }
    let _ = client.flush().await;
}

async fn publish(client: &async_nats::Client, subject: String, body: Vec<u8>) {
    if let Err(e) = client.publish(subject, body.into()).await {
        tracing::debug!(error = %e, "event not published to NATS");
    }
}
