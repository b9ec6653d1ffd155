//! Each API call and its error paths, on one shard and across two.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use corecast::{event, Error, MessageType, Server};

/// Clients until both shards hold one, with their UUIDs and shards.
fn spread_clients(
    ts: &TestServer,
    uuids: &std::sync::mpsc::Receiver<(String, usize)>,
) -> Vec<(Client, String, usize)> {
    let mut clients = Vec::new();
    let mut shards = [false; 2];
    for _ in 0..64 {
        let c = ts.client("/ws");
        let (uuid, shard) = next_uuid(uuids);
        shards[shard] = true;
        clients.push((c, uuid, shard));
        if shards.iter().all(|s| *s) && clients.len() >= 3 {
            return clients;
        }
    }
    panic!("SO_REUSEPORT never placed a connection on both shards");
}

fn two_shard_server() -> (TestServer, std::sync::mpsc::Receiver<(String, usize)>) {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", report));
    (ts, uuids)
}

#[test]
fn server_emit_to_reaches_any_shard_and_rejects_unknown() {
    let (ts, uuids) = two_shard_server();
    let mut clients = spread_clients(&ts, &uuids);
    for (c, uuid, _) in clients.iter_mut() {
        ts.server
            .emit_to(uuid, format!("to {uuid}"), MessageType::Text)
            .unwrap();
        assert_eq!(c.recv_text(), format!("to {uuid}"));
    }
    let err = ts.server.emit_to("nobody", "x", MessageType::Text);
    assert!(matches!(err, Err(Error::InvalidConnection)), "{err:?}");
    // Binary stays binary.
    let (c, uuid, _) = &mut clients[0];
    ts.server
        .emit_to(uuid, vec![1u8, 2, 3], MessageType::Binary)
        .unwrap();
    assert_eq!(c.recv(), tungstenite::Message::binary(vec![1u8, 2, 3]));
}

#[test]
fn server_calls_from_one_thread_arrive_in_order() {
    let (ts, uuids) = two_shard_server();
    let mut clients = spread_clients(&ts, &uuids);
    for i in 0..50 {
        for (_, uuid, _) in &clients {
            ts.server
                .emit_to(uuid, format!("{i}"), MessageType::Text)
                .unwrap();
        }
        ts.server.broadcast(format!("b{i}"), MessageType::Text);
    }
    for (c, _, _) in clients.iter_mut() {
        for i in 0..50 {
            assert_eq!(c.recv_text(), format!("{i}"));
            assert_eq!(c.recv_text(), format!("b{i}"));
        }
    }
}

#[test]
fn server_emit_to_list_skips_unknown_uuids() {
    let (ts, uuids) = two_shard_server();
    let mut clients = spread_clients(&ts, &uuids);
    let mut list: Vec<&str> = clients.iter().map(|(_, u, _)| u.as_str()).collect();
    list.insert(1, "missing");
    ts.server.emit_to_list(&list, "listed", MessageType::Text);
    for (c, _, _) in clients.iter_mut() {
        assert_eq!(c.recv_text(), "listed");
    }
}

#[test]
fn kws_emit_to_and_list_fire_error_per_failed_target() {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", report));
    let rec = Recorder::attach(&ts.server, &[event::ERROR]);
    let mut clients = spread_clients(&ts, &uuids);
    let targets: Vec<String> = clients.iter().map(|(_, u, _)| u.clone()).collect();
    let sender = targets[0].clone();
    let results = Arc::new(Mutex::new(Vec::new()));
    {
        let targets = targets.clone();
        let results = Arc::clone(&results);
        ts.server.on(event::MESSAGE, move |ep| {
            let kws = ep.kws();
            let ok: Vec<bool> = targets
                .iter()
                .map(|t| kws.emit_to(t, "direct", MessageType::Text).is_ok())
                .collect();
            let missing = kws.emit_to("missing-1", "x", MessageType::Text);
            let mut list: Vec<&str> = targets.iter().map(|s| s.as_str()).collect();
            list.push("missing-2");
            list.push("missing-3");
            kws.emit_to_list(&list, "listed", MessageType::Text);
            results
                .lock()
                .unwrap()
                .push((ok, matches!(missing, Err(Error::InvalidConnection))));
        });
    }
    clients[0].0.send_text("go");
    for (c, _, _) in clients.iter_mut() {
        assert_eq!(c.recv_text(), "direct");
        assert_eq!(c.recv_text(), "listed");
    }
    let (ok, missing_failed) = results.lock().unwrap()[0].clone();
    assert!(ok.iter().all(|b| *b));
    assert!(missing_failed);
    for m in ["missing-1", "missing-2", "missing-3"] {
        let e = rec.wait(m, |s| s.data == m.as_bytes());
        assert_eq!(e.uuid, sender, "the error fires on the sender");
        assert!(e.error.as_deref().unwrap().contains("InvalidConnection"));
    }
    let errors = rec.names_for(&sender);
    assert_eq!(errors.len(), 3, "one error per failed target: {errors:?}");
}

#[test]
fn broadcast_with_and_without_except() {
    let (ts, uuids) = two_shard_server();
    let mut clients = spread_clients(&ts, &uuids);
    ts.server.on(event::MESSAGE, |ep| {
        let except = ep.data().as_ref() == b"except";
        ep.kws()
            .broadcast(format!("all except={except}"), except, MessageType::Text);
    });
    clients[0].0.send_text("except");
    for (c, _, _) in clients.iter_mut().skip(1) {
        assert_eq!(c.recv_text(), "all except=true");
    }
    clients[0].0.send_text("all");
    // The sender skipped the first broadcast, so its next message is the second one.
    for (c, _, _) in clients.iter_mut() {
        assert_eq!(c.recv_text(), "all except=false");
    }
    // The server-wide broadcast reaches everyone.
    ts.server.broadcast("from server", MessageType::Text);
    for (c, _, _) in clients.iter_mut() {
        assert_eq!(c.recv_text(), "from server");
    }
}

#[test]
fn server_fire_runs_listeners_once_per_connection() {
    let (ts, uuids) = two_shard_server();
    let clients = spread_clients(&ts, &uuids);
    let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let h = Arc::clone(&hits);
    ts.server.on("custom", move |ep| {
        assert_eq!(ep.data().as_ref(), b"payload");
        *h.lock()
            .unwrap()
            .entry(ep.socket_uuid().to_string())
            .or_default() += 1;
    });
    let rec = Recorder::attach(&ts.server, &["custom"]);
    ts.server.fire("custom", "payload");
    for (_, uuid, _) in &clients {
        rec.wait_event("custom", uuid);
    }
    let hits = hits.lock().unwrap();
    assert_eq!(hits.len(), clients.len());
    assert!(hits.values().all(|n| *n == 1), "{hits:?}");
}

#[test]
fn kws_fire_runs_server_and_own_listeners_for_one_connection() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = Arc::clone(&order);
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", move |kws| {
        let o = Arc::clone(&o);
        kws.on("ping-me", move |ep| {
            o.lock()
                .unwrap()
                .push(format!("own:{}", String::from_utf8_lossy(ep.data())));
        });
    }));
    let o = Arc::clone(&order);
    ts.server.on("ping-me", move |ep| {
        o.lock()
            .unwrap()
            .push(format!("server:{}", String::from_utf8_lossy(ep.data())));
    });
    ts.server.on(event::MESSAGE, |ep| {
        ep.kws().fire("ping-me", ep.data().clone())
    });
    let rec = Recorder::attach(&ts.server, &["ping-me"]);
    let mut c = ts.client("/ws");
    c.send_text("x");
    rec.wait("ping-me", |s| s.name == "ping-me");
    wait_until(|| order.lock().unwrap().len() == 2, "both listeners");
    assert_eq!(*order.lock().unwrap(), ["server:x", "own:x"]);
}

#[test]
fn set_uuid_detects_collisions_across_shards() {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(Server::builder().shards(2).route("/ws", report));
    let mut clients = spread_clients(&ts, &uuids);
    let results = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&results);
    ts.server.on(event::MESSAGE, move |ep| {
        let wanted = String::from_utf8_lossy(ep.data()).to_string();
        let res = ep.kws().set_uuid(wanted.clone());
        r.lock()
            .unwrap()
            .push((wanted, format!("{res:?}"), ep.kws().uuid()));
        ep.kws().emit("done", MessageType::Text);
    });
    let first = clients.iter().position(|c| c.2 == 0).unwrap();
    let second = clients.iter().position(|c| c.2 == 1).unwrap();
    let old_first = clients[first].1.clone();
    clients[first].0.send_text("alice");
    assert_eq!(clients[first].0.recv_text(), "done");
    // The old UUID stops resolving at once; the new one works.
    assert!(ts
        .server
        .emit_to(&old_first, "x", MessageType::Text)
        .is_err());
    ts.server
        .emit_to("alice", "hi alice", MessageType::Text)
        .unwrap();
    assert_eq!(clients[first].0.recv_text(), "hi alice");
    // The other shard cannot take it.
    let old_second = clients[second].1.clone();
    clients[second].0.send_text("alice");
    assert_eq!(clients[second].0.recv_text(), "done");
    // Its own UUID again is a no-op.
    clients[second].0.send_text(&old_second);
    assert_eq!(clients[second].0.recv_text(), "done");
    let results = results.lock().unwrap();
    assert_eq!(
        results[0],
        ("alice".into(), "Ok(())".into(), "alice".into())
    );
    assert_eq!(
        results[1],
        (
            "alice".into(),
            "Err(UuidDuplication)".into(),
            old_second.clone()
        )
    );
    assert_eq!(
        results[2],
        (old_second.clone(), "Ok(())".into(), old_second)
    );
}

#[test]
fn set_uuid_on_a_dead_connection_changes_nothing() {
    let result = Arc::new(Mutex::new(None));
    let r = Arc::clone(&result);
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", |_| {}));
    ts.server.on(event::DISCONNECT, move |ep| {
        *r.lock().unwrap() = Some(format!("{:?}", ep.kws().set_uuid("ghost")));
    });
    let mut c = ts.client("/ws");
    c.close(1000, "");
    c.recv_close();
    wait_until(|| result.lock().unwrap().is_some(), "disconnect listener");
    assert_eq!(
        result.lock().unwrap().as_deref(),
        Some("Err(InvalidConnection)")
    );
    assert!(ts.server.emit_to("ghost", "x", MessageType::Text).is_err());
}

#[test]
fn off_removes_server_and_connection_listeners() {
    let server_hits = Arc::new(AtomicUsize::new(0));
    let own_hits = Arc::new(AtomicUsize::new(0));
    let own = Arc::clone(&own_hits);
    let ts = TestServer::start(Server::builder().shards(1).route("/ws", move |kws| {
        let own = Arc::clone(&own);
        kws.on(event::MESSAGE, move |ep| {
            own.fetch_add(1, Ordering::SeqCst);
            if ep.data().as_ref() == b"off" {
                ep.kws().off(event::MESSAGE);
            }
            ep.kws().emit("ack", MessageType::Text);
        });
    }));
    let s = Arc::clone(&server_hits);
    ts.server.on(event::MESSAGE, move |_| {
        s.fetch_add(1, Ordering::SeqCst);
    });
    let mut c = ts.client("/ws");
    c.send_text("one");
    assert_eq!(c.recv_text(), "ack");
    c.send_text("off");
    assert_eq!(c.recv_text(), "ack");
    ts.server.off(event::MESSAGE);
    // Neither listener runs now: prove the message arrived with a listener of another event.
    let rec = Recorder::attach(&ts.server, &[event::PONG]);
    c.send_text("ignored");
    c.ws.send(tungstenite::Message::Pong(b"p".to_vec()))
        .unwrap();
    rec.wait(event::PONG, |s| s.data == b"p");
    assert_eq!(server_hits.load(Ordering::SeqCst), 2);
    assert_eq!(own_hits.load(Ordering::SeqCst), 2);
}

#[test]
fn listener_panics_are_recovered_and_later_listeners_run() {
    let recovered = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&recovered);
    let cfg = corecast::Config {
        recover_handler: Some(Arc::new(
            move |name: &str, panic: &(dyn std::any::Any + Send)| {
                let msg = panic.downcast_ref::<&str>().copied().unwrap_or("?");
                r.lock().unwrap().push(format!("{name}:{msg}"));
            },
        )),
        ..Default::default()
    };
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .route_with_config("/ws", cfg, |_| {}),
    );
    ts.server.on(event::MESSAGE, |_| panic!("first listener"));
    ts.server.on(event::MESSAGE, |ep| {
        ep.kws().emit("second ran", MessageType::Text)
    });
    let mut c = ts.client("/ws");
    c.send_text("x");
    assert_eq!(c.recv_text(), "second ran");
    assert_eq!(*recovered.lock().unwrap(), ["message:first listener"]);
}

#[test]
fn attributes_params_query_headers_cookies_and_locals() {
    let seen = Arc::new(Mutex::new(None));
    let s = Arc::clone(&seen);
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .before_upgrade(|req| {
                if req.query("deny").is_some() {
                    return Err(corecast::Rejection::new(401, "denied"));
                }
                let user = req.header("x-user").unwrap_or("anon").to_string();
                req.set_local("user", user);
                Ok(())
            })
            .route("/room/:name/*", move |kws| {
                kws.set_attribute("n", 5u32);
                *s.lock().unwrap() = Some((
                    kws.param("name").map(str::to_string),
                    kws.param("*").map(str::to_string),
                    kws.query("q").map(str::to_string),
                    kws.local::<String>("user"),
                    kws.attribute::<u32>("n"),
                    kws.attribute::<String>("n"),
                    kws.attribute::<u32>("missing"),
                    kws.cookie("session").map(str::to_string),
                ));
            }),
    );
    let addr = ts.addr();
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{addr}/room/blue/a/b?q=x+y"
    ))
    .unwrap();
    req.headers_mut().insert("x-user", "ann".parse().unwrap());
    req.headers_mut()
        .insert("cookie", "a=1; session=\"s3\"".parse().unwrap());
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (_ws, _) = tungstenite::client(req, stream).expect("upgrade");
    wait_until(|| seen.lock().unwrap().is_some(), "route callback");
    let got = seen.lock().unwrap().clone().unwrap();
    assert_eq!(got.0.as_deref(), Some("blue"));
    assert_eq!(got.1.as_deref(), Some("a/b"));
    assert_eq!(got.2.as_deref(), Some("x y"));
    assert_eq!(got.3.as_deref(), Some("ann"));
    assert_eq!(got.4, Some(5));
    assert_eq!(got.5, None, "another type is None, not a panic");
    assert_eq!(got.6, None);
    assert_eq!(got.7.as_deref(), Some("s3"));
    // The gate's rejection reaches the client as its status.
    assert_eq!(upgrade_status(addr, "/room/blue/x?deny=1"), 401);
}
