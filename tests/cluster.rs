//! Cluster mode against a real nats-server: three nodes in one process act as one server
//! (every operation, exact counts, order, interest), UUID claims across nodes, and the
//! failures: NATS unreachable at start, NATS lost and back, two clusters on one NATS.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use corecast::{event, ClusterConfig, Error, MessageType, Server};
use tungstenite::Message;

fn config(nats: &Nats, cluster: &str, node: &str) -> ClusterConfig {
    ClusterConfig::nats(nats.url())
        .name(cluster)
        .node_id(node)
        .heartbeat(Duration::from_millis(200))
}

/// A node whose clients subscribe to the topics of their `?t=` query and report their UUIDs.
fn node(nats: &Nats, cluster: &str, id: &str) -> (TestServer, mpsc::Receiver<(String, usize)>) {
    let (report, uuids) = uuid_reporter();
    let ts = TestServer::start(
        Server::builder()
            .shards(2)
            .cluster(config(nats, cluster, id))
            .route("/ws", move |kws| {
                if let Some(list) = kws.query("t") {
                    for t in list.split(',').filter(|t| !t.is_empty()) {
                        kws.subscribe(t).expect("subscribes");
                    }
                }
                report(kws);
            })
            .before_upgrade(|req| {
                if let Some(name) = req.query("name").map(str::to_string) {
                    req.set_uuid(name);
                }
                Ok(())
            }),
    );
    (ts, uuids)
}

fn wait_for_nodes(nodes: &[&TestServer]) {
    for ts in nodes {
        wait_until(
            || {
                ts.server
                    .cluster()
                    .is_some_and(|v| v.nodes().len() == nodes.len())
            },
            "every node in every view",
        );
    }
}

/// Publishes `probe` to `topic` from `from` until `client` gets one: the subscriber's node
/// has taken the topic's subject. The client then skips any probe still in flight.
fn until_subscribed(from: &Server, topic: &str, client: &mut Client) {
    let (tx, rx) = mpsc::channel::<()>();
    let from = from.clone();
    let topic = topic.to_string();
    let prober = std::thread::spawn(move || {
        for _ in 0..200 {
            if rx.try_recv().is_ok() {
                return;
            }
            from.publish(&topic, "probe", MessageType::Text);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert_eq!(client.recv_text(), "probe");
    let _ = tx.send(());
    prober.join().unwrap();
}

/// The next text message that is not a probe.
fn next_text(c: &mut Client) -> String {
    loop {
        let t = c.recv_text();
        if t != "probe" {
            return t;
        }
    }
}

#[test]
fn three_nodes_act_as_one_server() {
    let nats = Nats::start();
    let (a, ua) = node(&nats, "three", "node-a");
    let (b, ub) = node(&nats, "three", "node-b");
    let (c, uc) = node(&nats, "three", "node-c");
    wait_for_nodes(&[&a, &b, &c]);
    let mut ca = a.client("/ws");
    let (id_a, _) = next_uuid(&ua);
    let mut cb = b.client("/ws");
    let (id_b, _) = next_uuid(&ub);
    let mut cc = c.client("/ws");
    let (id_c, _) = next_uuid(&uc);

    // Broadcast from one node reaches every node's clients, each exactly once.
    a.server.broadcast("to all", MessageType::Text);
    for client in [&mut ca, &mut cb, &mut cc] {
        assert_eq!(client.recv_text(), "to all");
    }

    // emit_to a UUID held elsewhere: Ok at once, delivered on the node that holds it.
    assert!(a.server.emit_to(&id_c, "for c", MessageType::Text).is_ok());
    assert_eq!(cc.recv_text(), "for c");
    a.server
        .emit_to_list(&[&id_a, &id_b, &id_c], "list", MessageType::Text);
    for client in [&mut ca, &mut cb, &mut cc] {
        assert_eq!(client.recv_text(), "list");
    }

    // fire runs the listeners on every node, once per connection.
    let fired = Arc::new(AtomicUsize::new(0));
    for ts in [&a, &b, &c] {
        let fired = Arc::clone(&fired);
        ts.server.on("tick", move |_| {
            fired.fetch_add(1, Ordering::SeqCst);
        });
    }
    b.server.fire("tick", "x");
    wait_until(|| fired.load(Ordering::SeqCst) == 3, "fire on every node");

    // The kws forms: a client on b asks its node to reach the others.
    b.server.on(event::MESSAGE, {
        let id_c = id_c.clone();
        move |ep| {
            let kws = ep.kws();
            match &**ep.data() {
                b"broadcast" => kws.broadcast("from b", true, MessageType::Text),
                b"emit" => kws.emit_to(&id_c, "b to c", MessageType::Text).unwrap(),
                _ => {}
            }
        }
    });
    cb.send_text("broadcast");
    assert_eq!(ca.recv_text(), "from b");
    assert_eq!(cc.recv_text(), "from b");
    cb.send_text("emit");
    assert_eq!(cc.recv_text(), "b to c");

    // close(uuid) from another node.
    assert!(c.server.close(&id_a).is_ok());
    assert_eq!(ca.recv_close().0, 1000);

    // A marker shows nobody got anything twice or anything meant for another.
    c.server.broadcast("end", MessageType::Text);
    assert_eq!(cb.recv_text(), "end", "b got only what was meant for it");
    assert_eq!(cc.recv_text(), "end", "c got only what was meant for it");

    let view = a.server.cluster().expect("cluster mode");
    let ids: Vec<String> = view.nodes().iter().map(|n| n.id.clone()).collect();
    assert_eq!(ids, ["node-a", "node-b", "node-c"]);
    assert!(view.is_connected());
    let m = a.server.metrics().cluster.expect("cluster metrics");
    assert!(m.messages_out >= 3 && m.connected && m.nodes == 3, "{m:?}");
}

#[test]
fn topics_reach_only_nodes_with_subscribers_in_publish_order() {
    let nats = Nats::start();
    let (a, ua) = node(&nats, "topics", "a");
    let (b, ub) = node(&nats, "topics", "b");
    let (c, uc) = node(&nats, "topics", "c");
    wait_for_nodes(&[&a, &b, &c]);
    let mut on_a = a.client("/ws?t=room");
    next_uuid(&ua);
    let mut on_b = b.client("/ws?t=room");
    next_uuid(&ub);
    let mut other_c = c.client("/ws?t=other");
    next_uuid(&uc);
    until_subscribed(&a.server, "room", &mut on_b);

    let before = c.server.metrics().cluster.unwrap().messages_in;
    const N: usize = 300;
    for i in 0..N {
        a.server.publish("room", i.to_string(), MessageType::Text);
    }
    for client in [&mut on_a, &mut on_b] {
        for i in 0..N {
            assert_eq!(next_text(client), i.to_string());
        }
    }
    // Node c has no subscriber of "room": not one of those messages reached it.
    assert_eq!(c.server.metrics().cluster.unwrap().messages_in, before);
    // Its client of another topic got nothing either.
    c.server.publish("other", "only other", MessageType::Text);
    assert_eq!(other_c.recv_text(), "only other");

    // kws.publish from b reaches a's subscriber, not b's own sender.
    b.server.on(event::MESSAGE, |ep| {
        ep.kws()
            .publish("room", ep.data().clone(), MessageType::Text)
    });
    on_b.send_text("from b");
    assert_eq!(next_text(&mut on_a), "from b");
    a.server.publish("room", "end", MessageType::Text);
    assert_eq!(
        next_text(&mut on_b),
        "end",
        "the sender did not get its own publish"
    );
}

#[test]
fn a_uuid_is_held_by_exactly_one_connection_in_the_cluster() {
    let nats = Nats::start();
    let (a, ua) = node(&nats, "claims", "a");
    let (b, ub) = node(&nats, "claims", "b");
    wait_for_nodes(&[&a, &b]);
    // Each node's clients ask to be renamed; both ask for the same name at once.
    let results = Arc::new(Mutex::new(Vec::new()));
    for ts in [&a, &b] {
        let results = Arc::clone(&results);
        ts.server.on(event::MESSAGE, move |ep| {
            let name = String::from_utf8_lossy(ep.data()).to_string();
            let (kws, results) = (ep.kws().clone(), Arc::clone(&results));
            glommio::spawn_local(async move {
                let r = kws.set_uuid_async(name).await;
                results.lock().unwrap().push(format!("{r:?}"));
                kws.emit(format!("{r:?}"), MessageType::Text);
            })
            .detach();
        });
    }
    for round in 0..5 {
        let name = format!("shared-{round}");
        let mut x = a.client("/ws");
        next_uuid(&ua);
        let mut y = b.client("/ws");
        next_uuid(&ub);
        let (n1, n2) = (name.clone(), name.clone());
        let tx = std::thread::spawn(move || {
            x.send_text(&n1);
            (x.recv_text(), x)
        });
        let ty = std::thread::spawn(move || {
            y.send_text(&n2);
            (y.recv_text(), y)
        });
        let ((rx, _x), (ry, _y)) = (tx.join().unwrap(), ty.join().unwrap());
        let mut got = [rx, ry];
        got.sort();
        assert_eq!(got, ["Err(UuidDuplication)", "Ok(())"], "round {round}");
    }

    // A name given at upgrade is claimed too: the second node refuses it with 409, and takes
    // it once the first connection has gone.
    let mut alice = a.client("/ws?name=alice");
    assert_eq!(next_uuid(&ua).0, "alice");
    assert_eq!(upgrade_status(b.addr(), "/ws?name=alice"), 409);
    alice.close(1000, "bye");
    assert!(alice.wait_closed());
    let _second = client_when_accepted(
        b.addr(),
        "/ws?name=alice",
        "alice free again after her connection went",
    );
    assert_eq!(next_uuid(&ub).0, "alice");
}

#[test]
fn a_pending_uuid_claim_holds_up_no_one_on_its_shard() {
    let nats = Nats::start();
    let ts = TestServer::start(
        Server::builder()
            .shards(1)
            .cluster(config(&nats, "pending", "a").claim_timeout(Duration::from_millis(500)))
            .route("/ws/:id", |kws| {
                let id = kws.param("id").unwrap_or_default().to_string();
                kws.set_uuid(id).unwrap();
            }),
    );
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = |log: &Arc<Mutex<Vec<String>>>, what: &str| {
        let log = Arc::clone(log);
        let what = what.to_string();
        move || log.lock().unwrap().iter().any(|l| l.starts_with(&what))
    };
    let on_message = Arc::clone(&log);
    ts.server.on(event::MESSAGE, move |ep| {
        if ep.data() == "rename" {
            let r = ep.kws().set_uuid("renamed");
            on_message
                .lock()
                .unwrap()
                .push(format!("set_uuid returned {r:?}"));
        } else {
            on_message.lock().unwrap().push("served".into());
            ep.kws().emit("served", MessageType::Text);
        }
    });
    let on_error = Arc::clone(&log);
    ts.server.on(event::ERROR, move |ep| {
        let error = ep.error().map(|e| format!("{e:?}")).unwrap_or_default();
        on_error
            .lock()
            .unwrap()
            .push(format!("claim failed: {error}"));
    });
    let mut x = ts.client("/ws/x");
    let mut y = ts.client("/ws/y");
    wait_until(|| ts.server.is_connected("x"), "x named");
    wait_until(|| ts.server.is_connected("y"), "y named");

    // NATS stops answering: x's claim waits for its timeout, on a task of its own.
    nats.pause();
    x.send_text("rename");
    wait_until(seen(&log, "set_uuid returned Ok(())"), "set_uuid returned");
    y.send_text("hello");
    assert_eq!(y.recv_text(), "served");
    assert_eq!(
        *log.lock().unwrap(),
        ["set_uuid returned Ok(())", "served"],
        "y was served while x's claim was pending"
    );
    wait_until(seen(&log, "claim failed: Timeout"), "the claim's timeout");
    assert!(
        ts.server.is_connected("x") && !ts.server.is_connected("renamed"),
        "a refused claim leaves the old UUID"
    );

    // With NATS back, the claim is granted and the new name resolves.
    nats.resume();
    x.send_text("rename");
    wait_until(
        || ts.server.is_connected("renamed"),
        "the renamed connection",
    );
    assert!(
        !ts.server.is_connected("x"),
        "the old UUID stopped resolving"
    );
    ts.server
        .emit_to("renamed", "hi", MessageType::Text)
        .unwrap();
    assert_eq!(x.recv_text(), "hi");
}

#[test]
fn nats_unreachable_at_start_is_a_clear_error_unless_asked_to_start_anyway() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let started = Server::builder()
        .shards(1)
        .cluster(ClusterConfig::nats(&url).connect_timeout(Duration::from_millis(500)))
        .start();
    let Err(err) = started else {
        panic!("started without NATS")
    };
    assert!(
        matches!(&err, Error::Cluster(m) if m.contains(&url)),
        "{err}"
    );

    let ts = TestServer::start(
        Server::builder().shards(1).route("/ws", |_| {}).cluster(
            ClusterConfig::nats(&url)
                .node_id("lonely")
                .start_without_nats(true),
        ),
    );
    let view = ts.server.cluster().unwrap();
    assert!(!view.is_connected());
    // Cross-node work while NATS is away is counted as dropped; local work goes on.
    let mut c = ts.client("/ws");
    ts.server.broadcast("local", MessageType::Text);
    assert_eq!(c.recv_text(), "local");
    assert!(ts.server.metrics().cluster.unwrap().dropped >= 1);
    // Bad cluster names and node ids are refused before anything starts.
    let bad = Server::builder()
        .cluster(ClusterConfig::nats(&url).name("a.b"))
        .start();
    assert!(matches!(bad, Err(Error::Config(_))));
}

#[test]
fn nats_lost_and_back_local_traffic_goes_on_and_cross_node_resumes() {
    let mut nats = Nats::start();
    let (a, ua) = node(&nats, "flaky", "a");
    let (b, ub) = node(&nats, "flaky", "b");
    wait_for_nodes(&[&a, &b]);
    let mut ca = a.client("/ws");
    next_uuid(&ua);
    let mut cb = b.client("/ws");
    next_uuid(&ub);
    // Two named clients on a: ed stays through the outage, dora leaves during it.
    let _ed = a.client("/ws?name=ed");
    assert_eq!(next_uuid(&ua).0, "ed");
    let mut dora = a.client("/ws?name=dora");
    assert_eq!(next_uuid(&ua).0, "dora");

    nats.kill();
    wait_until(
        || !a.server.cluster().unwrap().is_connected(),
        "a sees NATS gone",
    );
    let dropped = a.server.metrics().cluster.unwrap().dropped;
    a.server.broadcast("while down", MessageType::Text);
    assert_eq!(ca.recv_text(), "while down", "local delivery is untouched");
    assert!(a.server.metrics().cluster.unwrap().dropped > dropped);
    dora.close(1000, "bye");
    assert!(dora.wait_closed());

    nats.restart();
    wait_until(
        || a.server.cluster().unwrap().is_connected() && b.server.cluster().unwrap().is_connected(),
        "both nodes reconnected",
    );
    wait_for_nodes(&[&a, &b]);
    // Cross-node delivery works again, without a restart; the first message b gets is this.
    let (tx, rx) = mpsc::channel::<()>();
    let server = a.server.clone();
    let sender = std::thread::spawn(move || {
        for _ in 0..100 {
            if rx.try_recv().is_ok() {
                return;
            }
            server.broadcast("after", MessageType::Text);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert_eq!(cb.recv_text(), "after");
    let _ = tx.send(());
    sender.join().unwrap();
    assert!(matches!(ca.recv(), Message::Text(t) if t.as_str() == "after"));

    // Claims outlived the restart: ed is still refused on b. Dora's release waited for NATS
    // and went through: b can take her name.
    assert_eq!(upgrade_status(b.addr(), "/ws?name=ed"), 409);
    let _dora_on_b = client_when_accepted(
        b.addr(),
        "/ws?name=dora",
        "dora's name released after NATS came back",
    );
    assert_eq!(next_uuid(&ub).0, "dora");
}

#[test]
fn two_clusters_on_one_nats_do_not_see_each_other() {
    let nats = Nats::start();
    let (x, ux) = node(&nats, "blue", "n1");
    let (y, uy) = node(&nats, "green", "n1");
    let (x2, ux2) = node(&nats, "blue", "n2");
    wait_for_nodes(&[&x, &x2]);
    let mut cy = y.client("/ws");
    next_uuid(&uy);
    let mut cx2 = x2.client("/ws");
    next_uuid(&ux2);
    let _cx = x.client("/ws");
    next_uuid(&ux);
    x.server.broadcast("blue only", MessageType::Text);
    assert_eq!(cx2.recv_text(), "blue only");
    y.server.broadcast("green", MessageType::Text);
    assert_eq!(
        cy.recv_text(),
        "green",
        "green's client got nothing from blue first"
    );
    assert_eq!(y.server.cluster().unwrap().nodes().len(), 1);
    assert_eq!(x.server.cluster().unwrap().nodes().len(), 2);
}
