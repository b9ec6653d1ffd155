//! `--mode pubsub`: the JSON protocol of topic clients (subscribe, with positions and
//! recovery on topics with history; unsubscribe; publish; refresh; RPC), its answers, and the
//! per-connection lane that keeps one connection's requests in order while the backend's hooks
//! are asked. Not the other modes (`service.rs`) nor the HTTP API.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use corecast::backend::{Hook, Verdict};
use corecast::history::{Epoch, Position, Recovery};
use corecast::topics::MAX_TOPIC_LEN;
use corecast::{event, Error, EventPayload, MessageType, Server, Websocket};
use serde_json::Value;

/// Registers the listeners of `--mode pubsub`.
pub fn install(server: &Server) {
    server.on(event::CONNECT, on_connect);
    server.on(event::MESSAGE, pubsub);
    server.on(event::DISCONNECT, Lane::forget);
    server.on(event::TOKEN_EXPIRING, tell_expiring);
    server.on(event::ERROR, answer_rate_limited);
}

/// What a pubsub client frame asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum PubsubRequest {
    Subscribe(String),
    /// Subscribe to a topic with history, with positions: its publications come in the
    /// position envelope. With `since`, the last position the client saw, what it missed
    /// after it comes first; without, where the topic stands is answered.
    SubscribeFrom {
        topic: String,
        since: Option<Position>,
    },
    Unsubscribe(String),
    /// Publish `data` to the topic's other subscribers: a JSON string goes out as its text, any
    /// other JSON value as its JSON text. `key`: the conflation key, for topics whose full
    /// queues keep the latest publication per key.
    Publish {
        topic: String,
        data: String,
        key: Option<String>,
    },
    /// A fresh token for this connection (docs/security.md, "Expiry and refresh").
    Refresh(String),
    /// A request only the backend answers (its RPC hook): `id` comes back with the answer.
    Rpc {
        method: String,
        id: Option<Value>,
        data: Value,
    },
}

/// Reads one pubsub client frame: the request (the error is the message of the error frame
/// sent back), and its `"id"`, which every answer to it carries.
pub(crate) fn pubsub_request(data: &[u8]) -> (Result<PubsubRequest, String>, Option<Value>) {
    let Ok(serde_json::Value::Object(mut msg)) = serde_json::from_slice(data) else {
        return (Err("expected a JSON object".into()), None);
    };
    let id = msg.remove("id");
    (request_of(msg, id.clone()), id)
}

fn request_of(
    mut msg: serde_json::Map<String, Value>,
    id: Option<Value>,
) -> Result<PubsubRequest, String> {
    // A subscribe's options and a publish's key; ignored with any other request, as any
    // other member is.
    let (since, positions) = (msg.remove("since"), msg.remove("positions"));
    let key = msg.remove("key");
    let mut topic = |key: &str| match msg.remove(key) {
        Some(serde_json::Value::String(t)) => Ok(Some(t)),
        Some(_) => Err(format!("\"{key}\" must be a string")),
        None => Ok(None),
    };
    if let Some(t) = topic("subscribe")? {
        return subscribe_request(t, since, positions);
    }
    if let Some(t) = topic("unsubscribe")? {
        return Ok(PubsubRequest::Unsubscribe(t));
    }
    if let Some(t) = topic("publish")? {
        let data = match msg.remove("data") {
            Some(serde_json::Value::String(s)) => s,
            Some(v) => v.to_string(),
            None => return Err("\"publish\" needs \"data\"".into()),
        };
        let key = match key {
            None => None,
            Some(Value::String(k)) if !k.is_empty() && k.len() <= MAX_TOPIC_LEN => Some(k),
            Some(Value::String(_)) => return Err("\"key\" must be 1 to 256 bytes".into()),
            Some(_) => return Err("\"key\" must be a string".into()),
        };
        return Ok(PubsubRequest::Publish {
            topic: t,
            data,
            key,
        });
    }
    if let Some(jwt) = topic("refresh")? {
        return Ok(PubsubRequest::Refresh(jwt));
    }
    if let Some(method) = topic("rpc")? {
        return Ok(PubsubRequest::Rpc {
            method,
            id,
            data: msg.remove("data").unwrap_or(Value::Null),
        });
    }
    Err("expected \"subscribe\", \"unsubscribe\", \"publish\", \"refresh\" or \"rpc\"".into())
}

/// What `"since"` must look like, for the error.
const SINCE_FORM: &str =
    "\"since\" must be {\"offset\":<number>,\"epoch\":\"<8 hex digits>\"}, as an answer or an envelope gave them";

/// `{"subscribe":"t"}`, with `"positions":true` or `"since":{..}` for a subscription from the
/// topic's history (`"since":null`: no position yet, as `"positions":true`).
fn subscribe_request(
    topic: String,
    since: Option<Value>,
    positions: Option<Value>,
) -> Result<PubsubRequest, String> {
    let positions = match positions {
        None => false,
        Some(Value::Bool(on)) => on,
        Some(_) => return Err("\"positions\" must be true or false".into()),
    };
    match since {
        None if !positions => Ok(PubsubRequest::Subscribe(topic)),
        None | Some(Value::Null) => Ok(PubsubRequest::SubscribeFrom { topic, since: None }),
        Some(v) => {
            let since = Some(position(&v).ok_or(SINCE_FORM)?);
            Ok(PubsubRequest::SubscribeFrom { topic, since })
        }
    }
}

/// A position as answers and envelopes give it: `{"offset":5,"epoch":"abcd0001"}`. The
/// position of a topic nothing was published to yet, `{"offset":0,"epoch":null}`, is offset 0
/// of any epoch: another history's ("epoch changed", the live stream follows) or, by chance,
/// this one's, whose every publication then follows offset 0.
fn position(v: &Value) -> Option<Position> {
    let offset = v.get("offset")?.as_u64()?;
    let epoch = match v.get("epoch")? {
        Value::Null if offset == 0 => Epoch(0),
        e => Epoch::parse(e.as_str()?)?,
    };
    Some(Position { offset, epoch })
}

/// The answer to a subscription from history, sent before its catch-up:
/// `{"subscribed":"t","offset":N,"epoch":"e"}` for a fresh one, with `"recovered":true,
/// "missed":M` or `"recovered":false,"reason":".."` after a position. The offset and epoch are
/// the topic's last (0 and `null` before any publication): the publications that follow come
/// after them.
fn recovery_reply(topic: &str, recovery: Recovery) -> String {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let (recovered, position) = match recovery {
        Recovery::Fresh { position } => (String::new(), position),
        Recovery::Recovered { missed, position } => {
            (format!(r#","recovered":true,"missed":{missed}"#), position)
        }
        Recovery::NotRecovered { reason, position } => (
            format!(r#","recovered":false,"reason":{}"#, quoted(reason.reason())),
            position,
        ),
    };
    let (offset, epoch) = match position {
        Some(p) => (p.offset, format!(r#""{}""#, p.epoch)),
        None => (0, "null".to_string()),
    };
    format!(
        r#"{{"subscribed":{}{recovered},"offset":{offset},"epoch":{epoch}}}"#,
        quoted(topic)
    )
}

/// Subscribes from `topic`'s history (already allowed), answers, then sends the catch-up.
async fn subscribe_from_and_answer(
    kws: &Websocket,
    topic: &str,
    since: Option<Position>,
    id: Option<&Value>,
) {
    match kws.subscribe_from(topic, since).await {
        Ok(catchup) => {
            answer(kws, recovery_reply(topic, catchup.recovery()), id);
            catchup.deliver();
        }
        Err(e) => answer(
            kws,
            pubsub_reply("subscribe", topic, Some(&e.to_string())),
            id,
        ),
    }
}

/// The answer to an RPC request: `{"rpc":"<method>","id":<id>,"data":<answer>}`, or
/// `"error"` in place of `"data"`. `"id"` is there when the request had one.
fn rpc_reply(method: &str, id: Option<&Value>, answer: Result<Value, &str>) -> String {
    let mut reply = serde_json::Map::new();
    reply.insert("rpc".into(), method.into());
    if let Some(id) = id {
        reply.insert("id".into(), id.clone());
    }
    match answer {
        Ok(data) => reply.insert("data".into(), data),
        Err(e) => reply.insert("error".into(), e.into()),
    };
    Value::Object(reply).to_string()
}

/// Sends `reply`, a JSON object, as the answer to a request: with the request's `"id"` when it
/// had one, so a client matches answers to requests whatever their order.
fn answer(kws: &Websocket, reply: String, id: Option<&Value>) {
    let reply = match id {
        None => reply,
        Some(id) => match serde_json::from_str::<Value>(&reply) {
            Ok(Value::Object(mut fields)) => {
                fields.insert("id".into(), id.clone());
                Value::Object(fields).to_string()
            }
            _ => reply,
        },
    };
    kws.emit(reply, MessageType::Text);
}

/// A JSON text frame: `{"<key>":"<topic>"}`, plus `"error"` when there is one.
fn pubsub_reply(key: &str, topic: &str, error: Option<&str>) -> String {
    // Written directly: one of these goes out per subscription, often thousands at once.
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    match error {
        None => format!(r#"{{"{key}":{}}}"#, quoted(topic)),
        Some(e) => format!(r#"{{"error":{},"{key}":{}}}"#, quoted(e), quoted(topic)),
    }
}

/// The answer to a client that asks for a topic outside its token's grants.
const NOT_PERMITTED: &str = "not permitted";

/// With authentication, every connection of a user joins the user-limited topic
/// `user#<user>` when it opens, so a backend reaches all of them with one publish
/// (docs/security.md, "Users and connections").
pub fn join_user_topic(server: &Server) {
    server.on(event::CONNECT, |ep| {
        let kws = ep.kws();
        if let Some(user) = kws.user() {
            if let Err(e) = kws.subscribe(format!("user#{user}")) {
                tracing::debug!(error = %e, "connection not subscribed to its user topic");
            }
        }
    });
}

/// Subscribes to `topic` (already allowed) and says so, or says why not.
fn subscribe_and_answer(kws: &Websocket, topic: &str, id: Option<&Value>) {
    let reply = match kws.subscribe(topic) {
        Ok(_) => pubsub_reply("subscribed", topic, None),
        Err(e) => pubsub_reply("subscribe", topic, Some(&e.to_string())),
    };
    answer(kws, reply, id);
}

/// A new pubsub connection: notices on, envelopes with `?envelope=1`, and `?topics=a,b` on
/// the upgrade: one subscription per name, each answered like a frame's, in the connection's
/// lane like its frames.
fn on_connect(ep: &EventPayload) {
    let kws = ep.kws();
    // Pubsub clients read JSON answers among their messages already, so they are told in
    // band when a topic's slow-consumer policy drops publications for them.
    kws.set_notices(true);
    // `?envelope=1`: every publication in the envelope from the start, so no payload can pass
    // for an answer.
    if kws
        .query("envelope")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    {
        kws.set_positions(true);
    }
    if let Some(list) = kws.query("topics") {
        let topics: Vec<String> = list
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if !topics.is_empty() {
            Lane::submit(kws, Job::Topics(topics.into_iter()));
        }
    }
}

/// The answer to `{"refresh":"<jwt>"}`: `{"refreshed":true}`, or `{"refresh":null,"error":..}`
/// (the token is not sent back). A token for another user closes the connection with 1008
/// instead.
fn refresh_and_answer(kws: &Websocket, jwt: &str, id: Option<&Value>) {
    let result = match kws.user() {
        None => Err("tokens are not in use".to_string()),
        Some(_) => kws.refresh_token(jwt).map_err(|e| e.to_string()),
    };
    let reply = match result {
        Ok(()) => serde_json::json!({ "refreshed": true }),
        Err(e) => serde_json::json!({ "refresh": null, "error": e }),
    };
    answer(kws, reply.to_string(), id);
}

/// The connection's token expired: `{"expiring":<seconds left>}`, the time the client has to
/// send `{"refresh":"<jwt>"}` before it is closed with 1008.
fn tell_expiring(ep: &EventPayload) {
    let left: u64 = std::str::from_utf8(ep.data())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let notice = serde_json::json!({ "expiring": left });
    ep.kws().emit(notice.to_string(), MessageType::Text);
}

/// The answer to a request past the client's `--client-message-rate`, which was not acted on:
/// `{"publish":"t","error":"rate limit"}` for a publish, and the same form for a subscribe, an
/// unsubscribe, a refresh and an RPC; `{"error":"rate limit"}` for anything else; with the
/// request's `"id"`. (A client refused once too often is being closed with 1008, and gets no
/// answer.)
fn answer_rate_limited(ep: &EventPayload) {
    // Not alive: refused once too often, and already closing.
    if !matches!(ep.error(), Some(Error::RateLimited)) || !ep.kws().is_alive() {
        return;
    }
    let (request, id) = pubsub_request(ep.data());
    let reply = match request {
        Ok(PubsubRequest::Publish { topic, .. }) => {
            pubsub_reply("publish", &topic, Some(RATE_LIMIT))
        }
        Ok(PubsubRequest::Refresh(_)) => {
            serde_json::json!({ "refresh": null, "error": RATE_LIMIT }).to_string()
        }
        Ok(PubsubRequest::Subscribe(topic) | PubsubRequest::SubscribeFrom { topic, .. }) => {
            pubsub_reply("subscribe", &topic, Some(RATE_LIMIT))
        }
        Ok(PubsubRequest::Unsubscribe(topic)) => {
            pubsub_reply("unsubscribe", &topic, Some(RATE_LIMIT))
        }
        Ok(PubsubRequest::Rpc { method, .. }) => rpc_reply(&method, None, Err(RATE_LIMIT)),
        Err(_) => serde_json::json!({ "error": RATE_LIMIT }).to_string(),
    };
    answer(ep.kws(), reply, id.as_ref());
}

/// The error of a request refused by the rate limit.
const RATE_LIMIT: &str = "rate limit";

fn pubsub(ep: &EventPayload) {
    let (request, id) = if ep.message_type() == MessageType::Text {
        pubsub_request(ep.data())
    } else {
        (Err("expected a JSON text frame".into()), None)
    };
    Lane::submit(ep.kws(), Job::Request(request, id));
}

/// What a connection asked of pubsub mode, waiting its turn in the connection's lane.
enum Job {
    /// A frame: a request, or why it is not one, and its `"id"`.
    Request(Result<PubsubRequest, String>, Option<Value>),
    /// The `?topics=` of the upgrade still to subscribe, in order.
    Topics(std::vec::IntoIter<String>),
}

/// A hook call a request waits on, or a subscription from history (which waits on the
/// topic's home shard, after the hook when there is one).
enum Ask {
    Subscribe {
        topic: String,
        id: Option<Value>,
    },
    SubscribeFrom {
        topic: String,
        since: Option<Position>,
        hook: bool,
        id: Option<Value>,
    },
    Publish {
        topic: String,
        data: String,
        key: Option<String>,
        id: Option<Value>,
    },
    Rpc {
        method: String,
        id: Option<Value>,
        data: Value,
    },
}

/// Requests one connection may have waiting behind a hook call; past it a request is answered
/// `too many requests waiting` and not acted on.
const MAX_WAITING: usize = 64;

/// The error of a request that found its connection's lane full.
const TOO_MANY_WAITING: &str = "too many requests waiting";

thread_local! {
    /// This shard's busy lanes, by connection UUID. A lane is here exactly while its task runs:
    /// a connection without one is served inline.
    static LANES: RefCell<HashMap<String, Rc<Lane>>> = RefCell::new(HashMap::new());
}

/// One connection's requests in the order it sent them, while one of them waits on a hook:
/// a later request (an unsubscribe after a subscribe the backend is still deciding) never
/// overtakes an earlier one, while the shard goes on serving everyone else. A request that
/// needs no hook, from a connection with no lane, is acted on at once, with no lane made.
struct Lane {
    kws: Websocket,
    waiting: RefCell<VecDeque<Job>>,
}

impl Lane {
    /// Acts on `job` now if nothing of the connection waits and it needs no hook; otherwise
    /// queues it in the connection's lane, made (with its task) if there is none.
    fn submit(kws: &Websocket, job: Job) {
        // Nothing waits on this shard: the usual case, with nothing to look up.
        if LANES.with(|l| l.borrow().is_empty()) {
            if let Some((ask, rest)) = start(kws, job) {
                Lane::open(kws, kws.uuid(), ask, rest);
            }
            return;
        }
        let uuid = kws.uuid();
        let lane = LANES.with(|l| l.borrow().get(&uuid).cloned());
        match lane {
            Some(lane) => {
                let mut waiting = lane.waiting.borrow_mut();
                if waiting.len() >= MAX_WAITING {
                    drop(waiting);
                    refuse(kws, job, TOO_MANY_WAITING);
                } else {
                    waiting.push_back(job);
                }
            }
            None => {
                if let Some((ask, rest)) = start(kws, job) {
                    Lane::open(kws, uuid, ask, rest);
                }
            }
        }
    }

    /// Makes the connection's lane, with `rest` waiting, and the task that asks `ask` and then
    /// works through the lane.
    fn open(kws: &Websocket, uuid: String, ask: Ask, rest: Option<Job>) {
        let lane = Rc::new(Lane {
            kws: kws.clone(),
            waiting: RefCell::new(rest.into_iter().collect()),
        });
        LANES.with(|l| l.borrow_mut().insert(uuid.clone(), Rc::clone(&lane)));
        glommio::spawn_local(lane.work(uuid, ask)).detach();
    }

    /// The lane's task: asks, then takes the jobs in order, asking where they need to, until
    /// none waits or the connection is no longer open; then the lane goes.
    async fn work(self: Rc<Self>, uuid: String, ask: Ask) {
        let kws = &self.kws;
        finish(kws, ask).await;
        loop {
            let job = self.waiting.borrow_mut().pop_front();
            let Some(job) = job else {
                break;
            };
            if !kws.is_alive() {
                break;
            }
            if let Some((ask, rest)) = start(kws, job) {
                if let Some(rest) = rest {
                    self.waiting.borrow_mut().push_front(rest);
                }
                finish(kws, ask).await;
            }
            glommio::yield_if_needed().await;
        }
        self.waiting.borrow_mut().clear();
        LANES.with(|l| {
            let mut lanes = l.borrow_mut();
            if lanes.get(&uuid).is_some_and(|lane| Rc::ptr_eq(lane, &self)) {
                lanes.remove(&uuid);
            }
        });
    }

    /// `disconnect`: the connection's lane goes, with what waits in it (its task ends after
    /// the call in flight).
    fn forget(ep: &EventPayload) {
        if LANES.with(|l| l.borrow().is_empty()) {
            return;
        }
        let uuid = ep.kws().uuid();
        LANES.with(|l| {
            let mut lanes = l.borrow_mut();
            // A lane whose connection is still open is a newer connection's under this UUID.
            if lanes.get(&uuid).is_some_and(|lane| !lane.kws.is_alive()) {
                if let Some(lane) = lanes.remove(&uuid) {
                    lane.waiting.borrow_mut().clear();
                }
            }
        });
    }
}

/// Acts at once on what `job` needs no backend for. When it needs a hook: the call to make,
/// and what remains of the job after it.
fn start(kws: &Websocket, job: Job) -> Option<(Ask, Option<Job>)> {
    match job {
        Job::Request(request, id) => start_request(kws, request, id).map(|ask| (ask, None)),
        Job::Topics(mut topics) => {
            while let Some(topic) = topics.next() {
                if let Some(ask) = start_subscribe(kws, topic, None) {
                    let rest = (!topics.as_slice().is_empty()).then_some(Job::Topics(topics));
                    return Some((ask, rest));
                }
            }
            None
        }
    }
}

/// A subscribe: refused here when the connection's grants do not cover the topic
/// (`Identity::may_subscribe`), the backend's question with a subscribe hook, else done.
fn start_subscribe(kws: &Websocket, topic: String, id: Option<Value>) -> Option<Ask> {
    if !may_subscribe(kws, &topic, id.as_ref()) {
        return None;
    }
    if kws.has_hook(Hook::Subscribe) {
        return Some(Ask::Subscribe { topic, id });
    }
    subscribe_and_answer(kws, &topic, id.as_ref());
    None
}

/// A subscribe from history: refused here as `start_subscribe`'s, else always waited on.
fn start_subscribe_from(
    kws: &Websocket,
    topic: String,
    since: Option<Position>,
    id: Option<Value>,
) -> Option<Ask> {
    may_subscribe(kws, &topic, id.as_ref()).then(|| Ask::SubscribeFrom {
        hook: kws.has_hook(Hook::Subscribe),
        topic,
        since,
        id,
    })
}

/// Whether the connection's grants cover `topic`; when they do not it is told so.
fn may_subscribe(kws: &Websocket, topic: &str, id: Option<&Value>) -> bool {
    if kws.identity().is_some_and(|who| !who.may_subscribe(topic)) {
        let reply = pubsub_reply("subscribe", topic, Some(NOT_PERMITTED));
        answer(kws, reply, id);
        return false;
    }
    true
}

fn start_request(
    kws: &Websocket,
    request: Result<PubsubRequest, String>,
    id: Option<Value>,
) -> Option<Ask> {
    match request {
        Ok(PubsubRequest::Subscribe(topic)) => return start_subscribe(kws, topic, id),
        Ok(PubsubRequest::SubscribeFrom { topic, since }) => {
            return start_subscribe_from(kws, topic, since, id)
        }
        Ok(PubsubRequest::Unsubscribe(topic)) => {
            let was = kws.unsubscribe(&topic);
            let error = (!was).then_some("not subscribed");
            answer(
                kws,
                pubsub_reply("unsubscribed", &topic, error),
                id.as_ref(),
            );
        }
        Ok(PubsubRequest::Publish { topic, .. })
            if kws.identity().is_some_and(|who| !who.may_publish(&topic)) =>
        {
            answer(
                kws,
                pubsub_reply("publish", &topic, Some(NOT_PERMITTED)),
                id.as_ref(),
            )
        }
        Ok(PubsubRequest::Publish { topic, data, key }) if kws.has_hook(Hook::Publish) => {
            return Some(Ask::Publish {
                topic,
                data,
                key,
                id,
            })
        }
        Ok(PubsubRequest::Publish { topic, data, key }) => {
            publish(kws, &topic, key, data, id.as_ref())
        }
        Ok(PubsubRequest::Refresh(jwt)) => refresh_and_answer(kws, &jwt, id.as_ref()),
        Ok(PubsubRequest::Rpc { method, id, data }) if kws.has_hook(Hook::Rpc) => {
            return Some(Ask::Rpc { method, id, data })
        }
        Ok(PubsubRequest::Rpc { method, id, .. }) => kws.emit(
            rpc_reply(&method, id.as_ref(), Err(NO_RPC_HOOK)),
            MessageType::Text,
        ),
        Err(e) => answer(
            kws,
            serde_json::json!({ "error": e }).to_string(),
            id.as_ref(),
        ),
    }
    None
}

/// The error of an RPC request on a server without an RPC hook.
const NO_RPC_HOOK: &str = "no rpc hook";

/// What a client is told when its hook call failed: the reason stays in the server's log.
fn backend_failure(e: &Error) -> String {
    match e {
        Error::BackendBusy => "backend busy".into(),
        Error::BackendUnavailable(_) => "backend unavailable".into(),
        other => other.to_string(),
    }
}

/// Asks the backend and acts on its verdict.
async fn finish(kws: &Websocket, ask: Ask) {
    let (reply, id) = match ask {
        Ask::Subscribe { topic, id } => match kws.ask_subscribe(&topic).await {
            Ok(Verdict::Allow(_)) => return subscribe_and_answer(kws, &topic, id.as_ref()),
            Ok(Verdict::Refuse(reason)) => (pubsub_reply("subscribe", &topic, Some(&reason)), id),
            Err(e) => (
                pubsub_reply("subscribe", &topic, Some(&backend_failure(&e))),
                id,
            ),
        },
        Ask::SubscribeFrom {
            topic,
            since,
            hook,
            id,
        } => {
            let verdict = if hook {
                kws.ask_subscribe(&topic).await
            } else {
                Ok(Verdict::Allow(None))
            };
            match verdict {
                Ok(Verdict::Allow(_)) => {
                    return subscribe_from_and_answer(kws, &topic, since, id.as_ref()).await
                }
                Ok(Verdict::Refuse(reason)) => {
                    (pubsub_reply("subscribe", &topic, Some(&reason)), id)
                }
                Err(e) => (
                    pubsub_reply("subscribe", &topic, Some(&backend_failure(&e))),
                    id,
                ),
            }
        }
        Ask::Publish {
            topic,
            data,
            key,
            id,
        } => match kws.ask_publish(&topic, &data).await {
            Ok(Verdict::Allow(replaced)) => {
                let data = match replaced {
                    None => data,
                    Some(Value::String(s)) => s,
                    Some(v) => v.to_string(),
                };
                return publish(kws, &topic, key, data, id.as_ref());
            }
            Ok(Verdict::Refuse(reason)) => (pubsub_reply("publish", &topic, Some(&reason)), id),
            Err(e) => (
                pubsub_reply("publish", &topic, Some(&backend_failure(&e))),
                id,
            ),
        },
        Ask::Rpc { method, id, data } => {
            let id = id.as_ref();
            // `rpc_reply` writes the id itself.
            let reply = match kws.ask_rpc(&method, &data).await {
                Ok(Verdict::Allow(answer)) => {
                    rpc_reply(&method, id, Ok(answer.unwrap_or(Value::Null)))
                }
                Ok(Verdict::Refuse(reason)) => rpc_reply(&method, id, Err(&reason)),
                Err(e) => rpc_reply(&method, id, Err(&backend_failure(&e))),
            };
            return kws.emit(reply, MessageType::Text);
        }
    };
    answer(kws, reply, id.as_ref());
}

/// Publishes a client's text, with its conflation key when it gave one; a request with an
/// `"id"` is answered `{"published":"t","id":..}` once its publication is handed on.
fn publish(kws: &Websocket, topic: &str, key: Option<String>, data: String, id: Option<&Value>) {
    match key {
        Some(key) => kws.publish_keyed(topic, &key, data, MessageType::Text),
        None => kws.publish(topic, data, MessageType::Text),
    }
    if id.is_some() {
        answer(kws, pubsub_reply("published", topic, None), id);
    }
}

/// Answers a job that is not acted on with `error`, in its request's error form.
fn refuse(kws: &Websocket, job: Job, error: &str) {
    match job {
        Job::Topics(topics) => {
            for t in topics {
                answer(kws, pubsub_reply("subscribe", &t, Some(error)), None);
            }
        }
        Job::Request(request, id) => {
            let reply = match request {
                Ok(PubsubRequest::Subscribe(t) | PubsubRequest::SubscribeFrom { topic: t, .. }) => {
                    pubsub_reply("subscribe", &t, Some(error))
                }
                Ok(PubsubRequest::Unsubscribe(t)) => pubsub_reply("unsubscribe", &t, Some(error)),
                Ok(PubsubRequest::Publish { topic, .. }) => {
                    pubsub_reply("publish", &topic, Some(error))
                }
                Ok(PubsubRequest::Refresh(_)) => {
                    serde_json::json!({ "refresh": null, "error": error }).to_string()
                }
                Ok(PubsubRequest::Rpc { method, .. }) => rpc_reply(&method, None, Err(error)),
                Err(_) => serde_json::json!({ "error": error }).to_string(),
            };
            answer(kws, reply, id.as_ref());
        }
    }
}

#[cfg(test)]
#[path = "pubsub_tests.rs"]
mod tests;
