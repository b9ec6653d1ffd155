//! Many clients at once, each answered on its own connection.

mod common;

use std::sync::{Arc, Barrier};

use common::*;
use corecast::{event, MessageType, Server};

#[test]
fn two_hundred_clients_each_get_their_own_reply() {
    let ts = TestServer::start(Server::builder().shards(2).route("/ws/:id", |kws| {
        let id = kws.param("id").unwrap_or("").to_string();
        kws.set_attribute("id", id);
    }));
    ts.server.on(event::MESSAGE, |ep| {
        let id: &String = ep.socket_attributes().get("id").expect("id attribute");
        let reply = format!("{id}:{}", String::from_utf8_lossy(ep.data()));
        ep.kws().emit(reply, MessageType::Text);
    });
    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let addr = ts.addr();
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, &format!("/ws/c{i}"));
                barrier.wait();
                c.send_text(&format!("hello {i}"));
                assert_eq!(c.recv_text(), format!("c{i}:hello {i}"));
                c.close(1000, "");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    ts.wait_connections(0);
}
