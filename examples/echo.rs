//! The Go helper's README example: every message is answered with "echo: " + the message, and
//! `/ws/:id` stores the id as an attribute. Run it, then connect to ws://127.0.0.1:8080/ws/42.

use corecast::{event, MessageType, Server};

fn main() -> Result<(), corecast::Error> {
    let server = Server::builder()
        .bind("127.0.0.1:8080")
        .route("/ws/:id", |kws| {
            let id = kws.param("id").unwrap_or("").to_string();
            println!("connected: {} (id {id})", kws.uuid());
            kws.set_attribute("user_id", id);
        })
        .start()?;

    server.on(event::CONNECT, |ep| {
        println!("connect: {}", ep.socket_uuid());
    });
    server.on(event::MESSAGE, |ep| {
        let user: Option<&String> = ep.socket_attributes().get("user_id");
        println!("message from {user:?}: {:?}", ep.data());
        let mut reply = b"echo: ".to_vec();
        reply.extend_from_slice(ep.data());
        ep.kws().emit(reply, MessageType::Text);
    });
    server.on(event::DISCONNECT, |ep| {
        println!("disconnect: {} ({:?})", ep.socket_uuid(), ep.error());
    });
    server.on(event::ERROR, |ep| {
        println!("error on {}: {:?}", ep.socket_uuid(), ep.error());
    });

    println!("listening on ws://{}/ws/:id", server.local_addr());
    server.join()
}
