//! The public names and shapes of the API contract, written as a user would: this file must
//! keep compiling, and the server it starts must work.

mod common;

use std::time::Duration;

use corecast::{
    event, Config, Error, EventPayload, MessageType, Rejection, Server, UpgradeRequest, Websocket,
};

#[test]
fn the_contract_compiles_and_runs() {
    let server: Server = Server::builder()
        .bind("127.0.0.1:0")
        .shards(2)
        .route("/ws/:id", |kws: &Websocket| {
            kws.set_attribute("user_id", kws.param("id").unwrap_or("").to_string());
            let _: Option<&str> = kws.protocol();
        })
        .route_with_config(
            "/feed",
            Config {
                ping_interval: Duration::from_secs(5),
                subprotocols: vec!["chat".to_string()],
                ..Config::default()
            },
            |_kws: &Websocket| {},
        )
        .before_upgrade(|req: &mut UpgradeRequest| -> Result<(), Rejection> {
            let _ = (
                req.path(),
                req.query("q"),
                req.header("host"),
                req.cookie("c"),
                req.remote_addr(),
                req.offered_protocols(),
                req.protocol(),
            );
            req.set_local("k", 1u8);
            Ok(())
        })
        .start()
        .expect("starts");
    let addr: std::net::SocketAddr = server.local_addr();
    assert_ne!(addr.port(), 0);

    fn send_sync<T: Clone + Send + Sync + 'static>(_: &T) {}
    send_sync(&server);

    server.on(event::MESSAGE, |ep: &EventPayload| {
        let kws: &Websocket = ep.kws();
        let _: &str = ep.name();
        let _: &str = ep.socket_uuid();
        let _: Option<&String> = ep.socket_attributes().get::<String>("user_id");
        let _: Option<&Error> = ep.error();
        let data: bytes::Bytes = ep.data().clone();
        let _: String = kws.uuid();
        let _: Option<String> = kws.attribute::<String>("user_id");
        let _: Option<u8> = kws.local::<u8>("k");
        let _: bool = kws.is_alive();
        let _: std::net::SocketAddr = kws.remote_addr();
        let _: Option<&str> = kws.query("q");
        let _: Option<&str> = kws.header("host");
        let _: Option<&str> = kws.cookie("c");
        let _: Result<(), Error> = kws.emit_to("nobody", "x", MessageType::Text);
        kws.emit_to_list(&["nobody"], "x", MessageType::Binary);
        kws.broadcast(data.clone(), true, MessageType::Text);
        kws.fire("custom", "payload");
        kws.on("custom", |_ep: &EventPayload| {});
        kws.off("custom");
        let _: Result<bool, Error> = kws.subscribe("topic");
        let _: Result<bool, Error> = kws.subscribe(String::from("topic"));
        let _: bool = kws.unsubscribe("topic");
        let _: bool = kws.is_subscribed("topic");
        let _: Vec<String> = kws.topics();
        kws.publish("topic", data.clone(), MessageType::Text);
        kws.emit(data, MessageType::Text);
    });
    server.off("unused");
    let missing = server.emit_to("nobody", "x", MessageType::Text);
    assert!(matches!(missing, Err(Error::InvalidConnection)));
    server.emit_to_list(&["a", "b"], String::from("x"), MessageType::Text);
    server.broadcast(vec![1u8, 2], MessageType::Binary);
    server.fire("custom", bytes::Bytes::from_static(b"x"));
    server.publish("topic", "x", MessageType::Text);
    let _: usize = server.subscriber_count("topic");
    let _: Vec<(String, usize)> = server.topics();
    assert_eq!(server.connections(), 0);

    let mut c = common::Client::connect(addr, "/ws/7");
    c.send_text("hello");
    assert_eq!(c.recv_text(), "hello");

    server.drain();
    assert!(server.is_draining());
    let closed: Result<(), Error> = server.close_all(1000, "bye", Duration::from_secs(5));
    assert!(closed.is_ok());
    server.shutdown();
    let joined: Result<(), Error> = server.join();
    assert!(joined.is_ok());

    // Every pinned error variant, by name.
    for e in [
        Error::InvalidConnection,
        Error::UuidDuplication,
        Error::QueueFull,
        Error::CallbackPanic,
        Error::Timeout,
        Error::MessageTooLarge,
        Error::Io(std::io::Error::other("x")),
        Error::InvalidTopic,
        Error::TooManyTopics,
    ] {
        let timeout: bool = e.is_timeout();
        assert_eq!(timeout, matches!(e, Error::Timeout));
    }
    let _ = Rejection::new(401, "no");
    let cfg = Config::default();
    let _: (Duration, Duration, Duration, usize, usize, u32, Duration) = (
        cfg.ping_interval,
        cfg.read_idle_timeout,
        cfg.write_timeout,
        cfg.max_message_size,
        cfg.send_queue_size,
        cfg.max_send_retry,
        cfg.retry_send_timeout,
    );
    let _: usize = cfg.max_topics;
    let _: Option<corecast::RecoverHandler> = cfg.recover_handler;
}
