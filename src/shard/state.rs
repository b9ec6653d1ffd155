//! One shard's state as its thread sees it: its connections, the server's shared state, and
//! its own lifecycle (stopping, the sockets still held, the final halt); what each inbox
//! message does; and how any thread hands work to a shard. Not the tasks that run on the
//! shard (`mod.rs`, `io.rs`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::RawFd;

use bytes::Bytes;
use futures_lite::future;
use glommio::timer::Timer;
use slab::Slab;

use super::conn::Conn;
use super::connections::Connections;
use super::link::{Refused, ShardLinks, ShardMsg};
use super::notify::LocalNotify;
use super::readiness::Readiness;
use super::shared::Shared;
use crate::auth::RefusalLimit;
use crate::cluster::handle::Work;
use crate::event::EventName;
use crate::history::Retention;
use crate::registry::{ConnId, ShardId};
use crate::topics::PublishReport;
use crate::ws::queue::FrameBytes;

thread_local! {
    /// The shard this thread runs, if it is a shard thread.
    static CURRENT: RefCell<Option<Rc<ShardCore>>> = const { RefCell::new(None) };
}

/// Whether this thread runs a shard of any server: blocking here would stall it.
pub(crate) fn on_shard_thread() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

/// This thread's shard when it is `shard` of the server that `links` belong to: work for it
/// runs inline, not through the inbox.
pub(crate) fn running(links: &Arc<ShardLinks>, shard: ShardId) -> Option<Rc<ShardCore>> {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|core| core.id() == shard && Arc::ptr_eq(&core.conns.links, links))
            .cloned()
    })
}

pub(crate) struct ShardCore {
    pub(crate) conns: Rc<Connections>,
    pub(crate) shared: Arc<Shared>,
    stopping: Cell<bool>,
    stopped: Cell<bool>,
    finished: LocalNotify,
    /// The sockets of the connection tasks still running, and a signal each time one ends.
    sockets: RefCell<Slab<RawFd>>,
    socket_closed: LocalNotify,
}

/// Longest a stopping shard waits for its connection tasks to drop their sockets.
const HALT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection task's socket, known to the shard while the task runs (see
/// `ShardCore::hold_socket`); the tasks holding one are what `corecast_connection_tasks` counts.
pub(crate) struct SocketHold<'a> {
    core: &'a ShardCore,
    key: usize,
}

impl SocketHold<'_> {
    /// The task holds its socket on another descriptor now.
    pub(crate) fn moved_to(&self, fd: RawFd) {
        if let Some(held) = self.core.sockets.borrow_mut().get_mut(self.key) {
            *held = fd;
        }
    }
}

impl Drop for SocketHold<'_> {
    fn drop(&mut self) {
        self.core.sockets.borrow_mut().remove(self.key);
        self.core.conns.metrics().task_ended();
        self.core.socket_closed.notify();
    }
}

impl ShardCore {
    /// The shard `id` of `shared`, made the current shard of this thread.
    pub(crate) fn install(id: ShardId, shared: Arc<Shared>, readiness: Readiness) -> Rc<ShardCore> {
        let mut conns = Connections::new(
            id,
            Arc::clone(&shared.registry),
            Arc::clone(&shared.links),
            Arc::clone(&shared.listeners),
            Arc::clone(&shared.topics),
            shared.cluster.clone(),
            readiness,
        );
        conns.auth = shared.auth.clone();
        conns.token_refusals = shared
            .auth
            .as_ref()
            .filter(|v| v.refusal_limit() > 0)
            .map(|v| RefCell::new(RefusalLimit::new(v.refusal_limit())));
        conns.history_rules = shared.history.clone();
        conns.slow_consumers = shared.slow_consumers.clone();
        conns.backend = shared
            .backend
            .as_ref()
            .map(|b| b.link(id, Arc::clone(&shared.links)));
        let core = Rc::new(ShardCore {
            conns: Rc::new(conns),
            shared,
            stopping: Cell::new(false),
            stopped: Cell::new(false),
            finished: LocalNotify::default(),
            sockets: RefCell::new(Slab::new()),
            socket_closed: LocalNotify::default(),
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(Rc::clone(&core)));
        core
    }

    /// Ends this thread's part: it runs no shard any more.
    pub(crate) fn uninstall(&self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }

    pub(crate) fn id(&self) -> ShardId {
        self.conns.id
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Whether the shard has closed everything and its main loop should end.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Resolves when the shard has closed everything after a stop.
    pub(crate) async fn finished(&self) {
        if !self.stopped.get() {
            self.finished.wait().await;
        }
    }

    /// Makes the task's socket known to the shard until the guard drops.
    pub(crate) fn hold_socket(&self, fd: RawFd) -> SocketHold<'_> {
        let key = self.sockets.borrow_mut().insert(fd);
        self.conns.metrics().task_started();
        SocketHold { core: self, key }
    }

    /// Shuts down every socket a connection task still holds, so the task's reads and writes
    /// end and it drops the socket, then waits until all have, for at most `HALT_TIMEOUT`: a
    /// stopping shard leaves no descriptor open behind it. Runs after the shard's closes: only
    /// lingering closes and unfinished handshakes are left by then.
    pub(crate) async fn halt_sockets(&self) {
        for (_, &fd) in self.sockets.borrow().iter() {
            // SAFETY: the fd belongs to a live connection task (its guard is in the slab), so
            // it is open; shutdown only ends the stream's traffic.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
        // Opened after the shard's closes began (a handshake already past the drain check)
        // and parked: torn down through the readiness set, finished by a resumed task.
        let parked = |conns: &[Rc<Conn>]| conns.iter().filter(|c| c.shut_down_parked()).count() > 0;
        let give_up = Instant::now() + HALT_TIMEOUT;
        while !self.sockets.borrow().is_empty() || parked(&self.conns.snapshot()) {
            let now = Instant::now();
            if now >= give_up {
                tracing::warn!(
                    shard = self.id().0,
                    left = self.sockets.borrow().len(),
                    "sockets still open at exit"
                );
                return;
            }
            future::or(self.socket_closed.wait(), async {
                Timer::new(give_up - now).await;
            })
            .await;
        }
    }

    /// Does what a message asks, at `now` (read once per inbox burst, or by the inline
    /// caller). Runs on the shard thread. A fan-out reads the clock again to time itself.
    pub(crate) fn handle(self: &Rc<Self>, msg: ShardMsg, now: Instant) {
        match msg {
            ShardMsg::Emit { to, frame } => {
                if let Some(c) = self.conns.get(to) {
                    // The target may have closed since the sender looked it up; that is not
                    // an error the sender can still be told about.
                    let _ = c.send_frame(frame, now);
                }
            }
            ShardMsg::Broadcast { frame, except } => {
                let now = Instant::now();
                let frame = FrameBytes::shared(frame);
                // Pushing never runs listeners, so the slab can stay borrowed. A connection
                // already closing is no longer a target (nor an error).
                self.conns.for_each(|c| {
                    if Some(c.id) != except {
                        c.offer_frame(frame.clone(), now);
                    }
                });
                let nanos = now.elapsed().as_nanos();
                self.conns
                    .metrics()
                    .fanned_out(u64::try_from(nanos).unwrap_or(u64::MAX));
            }
            ShardMsg::Publish {
                topic,
                frame,
                key,
                except,
                position,
                report,
            } => {
                let done = self
                    .conns
                    .deliver_to_topic(&topic, &frame, key, except, position);
                if let Some(report) = report {
                    let _ = report.send(PublishReport { shards: 1, ..done });
                }
            }
            ShardMsg::Record {
                topic,
                frame,
                key,
                except,
                report,
            } => self.record(topic, frame, key, except, report, now),
            // In cluster mode the topic's history is its JetStream stream, read by the NATS
            // link, which answers within its bound.
            ShardMsg::Window { topic, done } => match &self.conns.cluster {
                Some(cluster) => cluster.window(topic, done),
                None => {
                    let window = self.conns.histories.borrow_mut().window(&topic, now);
                    let _ = done.send(window);
                }
            },
            ShardMsg::Recover { topic, since, done } => {
                match (&self.conns.cluster, self.retention(&topic)) {
                    (Some(cluster), Some(retention)) => {
                        cluster.recover(topic, retention, since, done)
                    }
                    _ => {
                        let answer = self
                            .conns
                            .histories
                            .borrow_mut()
                            .recover(&topic, since, now);
                        let _ = done.send(answer);
                    }
                }
            }
            ShardMsg::Subscription {
                to,
                topic,
                subscribe,
                done,
            } => {
                let answer = match self.conns.get(to) {
                    None => Err(crate::Error::InvalidConnection),
                    Some(c) if subscribe => c.subscribe(&topic),
                    Some(c) => Ok(c.unsubscribe(&topic)),
                };
                let _ = done.send(answer);
            }
            ShardMsg::Fire { name, data } => {
                for c in self.conns.snapshot() {
                    if c.is_open() {
                        c.fire(EventName::Shared(Arc::clone(&name)), data.clone(), None);
                    }
                }
            }
            ShardMsg::Close { to, code, reason } => {
                if let Some(c) = self.conns.get(to) {
                    c.close(code, &reason);
                }
            }
            ShardMsg::CloseAll {
                frame,
                deadline,
                done,
            } => {
                let core = Rc::clone(self);
                glommio::spawn_local(async move {
                    let forced = core.close_all(frame, deadline).await;
                    let _ = done.send(forced);
                })
                .detach();
            }
            ShardMsg::Stop { deadline } => {
                if self.stopping.replace(true) {
                    return;
                }
                let core = Rc::clone(self);
                glommio::spawn_local(async move {
                    let frame = crate::ws::frame::encode_close(1001, "server shutting down");
                    core.close_all(frame, deadline).await;
                    core.stopped.set(true);
                    core.finished.notify();
                })
                .detach();
            }
        }
    }

    /// What `topic` keeps, if it keeps history.
    fn retention(&self, topic: &str) -> Option<Retention> {
        self.conns.history_rules.as_ref()?.retention(topic)
    }

    /// As the home of a topic with history: gives the publication its position, keeps it, and
    /// sends it to every shard with subscribers (this one inline). With `report`, answers there
    /// for its own delivery and hands it on with each `Publish`: every shard answers once.
    /// In cluster mode it hands the publication to the topic's JetStream stream instead, from
    /// which every node, this one too, delivers it with its position: nothing is delivered
    /// here now, and the report says so (it is partial, as any in cluster mode).
    fn record(
        &self,
        topic: Arc<str>,
        frame: Bytes,
        key: u64,
        except: Option<ConnId>,
        report: Option<flume::Sender<PublishReport>>,
        now: Instant,
    ) {
        let mut mine = PublishReport {
            shards: 1,
            ..PublishReport::default()
        };
        let retention = self.retention(&topic);
        if let (Some(retention), Some(cluster)) = (retention, &self.conns.cluster) {
            // A name no subscriber can hold reaches nobody, and is not kept.
            if crate::topics::check_name(&topic).is_ok() {
                cluster.send(Work::Record {
                    topic,
                    frame,
                    key,
                    except,
                    retention,
                });
            }
        } else if let Some(retention) = retention {
            let position =
                self.conns
                    .histories
                    .borrow_mut()
                    .append(&topic, retention, frame.clone(), now);
            for shard in self.conns.topic_table.shards_with(&topic) {
                let except = except.filter(|id| id.shard == shard);
                if shard == self.conns.id {
                    let done =
                        self.conns
                            .deliver_to_topic(&topic, &frame, key, except, Some(position));
                    mine.add(&done);
                    continue;
                }
                let msg = ShardMsg::Publish {
                    topic: Arc::clone(&topic),
                    frame: frame.clone(),
                    key,
                    except,
                    position: Some(position),
                    report: report.clone(),
                };
                // A full inbox misses this publication, as for any publish; its subscribers can
                // recover it from the history.
                if let Err(Refused::Full) = self.shared.links.post(shard, msg) {
                    mine.partial = true;
                }
            }
        }
        if let Some(report) = report {
            let _ = report.send(mine);
        }
    }

    /// Closes every connection of the shard; past `deadline` force-closes the rest. Returns
    /// whether any had to be forced.
    async fn close_all(self: &Rc<Self>, frame: Bytes, deadline: Instant) -> bool {
        let targets = self.conns.snapshot();
        for c in &targets {
            // No deadline of its own: this loop force-closes at the shard's deadline.
            c.close_shared(frame.clone());
        }
        loop {
            if targets.iter().all(|c| c.is_gone()) {
                return targets.iter().any(|c| c.close_forced());
            }
            let now = Instant::now();
            if now >= deadline {
                for c in &targets {
                    c.force_close();
                }
                continue;
            }
            future::or(self.conns.teardowns.wait(), async {
                Timer::new(deadline - now).await;
            })
            .await;
        }
    }
}
