//! What the history tests share: the route callback of their servers, whose clients subscribe
//! from a position and publish by text commands, and the answers as JSON. Not a test itself.
#![allow(dead_code)]

use corecast::history::{Epoch, Position, Recovery};
use corecast::{event, Config, MessageType, Websocket};
use serde_json::{json, Value};

use crate::common::Client;

/// A client's text `sub <topic> [<offset> <epoch>]` subscribes with `subscribe_from` and is
/// answered with the result as JSON (`describe`), then gets the catch-up; `pub <topic> <data>`
/// publishes.
pub fn sub_and_pub(kws: &Websocket) {
    kws.on(event::MESSAGE, |ep| {
        let text = String::from_utf8_lossy(ep.data()).to_string();
        let words: Vec<String> = text.split(' ').map(str::to_string).collect();
        let kws = ep.kws().clone();
        match words.first().map(String::as_str) {
            Some("pub") => kws.publish(&words[1], words[2].clone(), MessageType::Text),
            Some("sub") => {
                let since = (words.len() == 4).then(|| Position {
                    offset: words[2].parse().unwrap(),
                    epoch: Epoch::parse(&words[3]).unwrap(),
                });
                let topic = words[1].clone();
                glommio::spawn_local(async move {
                    match kws.subscribe_from(&topic, since).await {
                        Ok(catchup) => {
                            // The answer first, then the catch-up.
                            let answer = describe(catchup.recovery());
                            kws.emit(answer.to_string(), MessageType::Text);
                            catchup.deliver();
                        }
                        Err(e) => {
                            let answer = json!({ "error": e.to_string() });
                            kws.emit(answer.to_string(), MessageType::Text);
                        }
                    }
                })
                .detach();
            }
            _ => {}
        }
    });
}

pub fn queue_for_catchups() -> Config {
    Config {
        send_queue_size: 100_000,
        ..Config::default()
    }
}

pub fn describe(r: Recovery) -> Value {
    let pos = |p: Option<Position>| {
        p.map_or(
            Value::Null,
            |p| json!({ "offset": p.offset, "epoch": p.epoch.to_string() }),
        )
    };
    match r {
        Recovery::Fresh { position } => json!({ "fresh": pos(position) }),
        Recovery::Recovered { missed, position } => {
            json!({ "recovered": missed, "position": pos(position) })
        }
        Recovery::NotRecovered { reason, position } => {
            json!({ "not_recovered": reason.reason(), "position": pos(position) })
        }
    }
}

pub fn json_of(c: &mut Client) -> Value {
    serde_json::from_str(&c.recv_text()).unwrap()
}
