//! The session's rules driven with a virtual clock: no sockets, no sleeps. Each test moves
//! `now` by hand and reads what the session wants written, when it wants to be woken, and
//! what it reports.

use std::time::Duration;

use super::*;
use crate::ws::liveness::{LATE_TOLERANCE, MAX_LATE_RECHECKS};
use crate::ws::queue::MAX_IOVECS;
// The library's route settings stand in for any `Settings`.
use crate::Config;

type Session = super::Session<Config>;

const KEY: [u8; 4] = [1, 2, 3, 4];

fn config() -> Arc<Config> {
    Arc::new(
        Config {
            ping_interval: Duration::from_secs(1),
            read_idle_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(10),
            send_queue_size: 2,
            max_send_retry: 5,
            retry_send_timeout: Duration::from_millis(20),
            max_message_size: 1024,
            ..Config::default()
        }
        .effective(),
    )
}

/// `config()` with permessage-deflate offered.
fn deflate_config() -> Arc<Config> {
    Arc::new(
        Config {
            deflate: Some(crate::Deflate::default()),
            ..(*config()).clone()
        }
        .effective(),
    )
}

fn client(op: OpCode, payload: &[u8]) -> Vec<u8> {
    frame::encode_masked(op, payload, KEY)
}

fn client_close(code: u16) -> Vec<u8> {
    client(OpCode::Close, &code.to_be_bytes())
}

/// Everything the session wants written now, as one byte string.
fn pending(s: &Session) -> Vec<u8> {
    let mut slices: [&[u8]; MAX_IOVECS] = [&[]; MAX_IOVECS];
    let n = s.poll_transmit(&mut slices);
    slices[..n].concat()
}

/// Writes everything pending, as a socket that takes it all would.
fn write_all(s: &mut Session, now: Instant) -> Vec<u8> {
    let mut all = Vec::new();
    loop {
        let bytes = pending(s);
        if bytes.is_empty() {
            return all;
        }
        s.handle_written(now, bytes.len());
        all.extend(bytes);
    }
}

/// The events reported so far, in a form easy to compare.
fn events(s: &mut Session) -> Vec<String> {
    std::iter::from_fn(|| s.poll_event())
        .map(|e| match e {
            Event::Message { data, binary } => {
                format!("message {binary} {}", String::from_utf8_lossy(&data))
            }
            Event::Ping(d) => format!("ping {}", String::from_utf8_lossy(&d)),
            Event::Pong(d) => format!("pong {}", String::from_utf8_lossy(&d)),
            Event::Dropped(d) => format!("dropped {}", String::from_utf8_lossy(&d)),
            Event::RateLimited(d) => format!("limited {}", String::from_utf8_lossy(&d)),
            Event::CloseComplete => "close".into(),
            Event::Closed(None) => "closed".into(),
            Event::Closed(Some(e)) => format!("closed: {e:?}"),
        })
        .collect()
}

#[test]
fn pings_every_interval_and_idles_out_after_the_idle_timeout() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    s.handle_timeout(t0 + Duration::from_millis(999));
    assert!(pending(&s).is_empty(), "no ping before the interval");
    s.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(pending(&s), [0x89, 0x00]);
    write_all(&mut s, t0 + Duration::from_secs(1));
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    // The peer never answers: torn down once the idle timeout has passed since the start.
    s.handle_timeout(t0 + Duration::from_secs(2));
    s.handle_timeout(t0 + Duration::from_millis(2999));
    assert!(events(&mut s).is_empty());
    s.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(events(&mut s), ["closed: IdleTimeout(3s)"]);
    assert!(s.is_closed());
    assert_eq!(s.linger(), None, "an idle peer's socket is dropped");
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn any_inbound_frame_proves_liveness() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    let t1 = t0 + Duration::from_millis(2500);
    s.handle_read(t1, &client(OpCode::Pong, b""));
    assert_eq!(events(&mut s), ["pong "]);
    s.handle_timeout(t0 + Duration::from_secs(3));
    assert!(s.is_open(), "a pong at 2.5 s moved the idle deadline");
    s.handle_timeout(t1 + Duration::from_secs(3));
    assert_eq!(events(&mut s), ["closed: IdleTimeout(3s)"]);
}

#[test]
fn a_ping_is_answered_with_its_payload_and_reported() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.handle_read(t0, &client(OpCode::Ping, b"hi"));
    assert_eq!(events(&mut s), ["ping hi"]);
    assert_eq!(pending(&s), frame::encode(OpCode::Pong, b"hi").to_vec());
}

#[test]
fn a_write_stall_past_the_write_timeout_tears_down() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    assert_eq!(s.send(t0, frame::encode(OpCode::Text, b"x")), Push::Queued);
    s.handle_write_blocked(t0);
    // Keep the peer alive with pongs so only the stall rule can fire.
    for secs in 1..10 {
        let now = t0 + Duration::from_secs(secs);
        s.handle_read(now, &client(OpCode::Pong, b""));
        s.handle_timeout(now);
    }
    assert_eq!(events(&mut s), vec!["pong "; 9]);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    s.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(events(&mut s), ["closed: WriteTimeout(10s)"]);
}

#[test]
fn progress_restarts_the_stall_clock() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.send(t0, frame::encode(OpCode::Text, b"abc"));
    s.handle_write_blocked(t0);
    s.handle_written(t0 + Duration::from_secs(9), 1);
    s.handle_write_blocked(t0 + Duration::from_secs(9));
    s.handle_read(t0 + Duration::from_secs(10), &client(OpCode::Pong, b""));
    s.handle_timeout(t0 + Duration::from_secs(10));
    assert!(s.is_open());
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(11)));
}

#[test]
fn a_full_queue_drops_after_the_retry_window_and_tears_down_after_the_write_timeout() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    let msg = frame::encode(OpCode::Text, b"m");
    assert_eq!(s.send(t0, msg.clone()), Push::Queued);
    assert_eq!(s.send(t0, msg.clone()), Push::Queued);
    let window = Duration::from_millis(100);
    assert_eq!(
        s.send(t0, msg.clone()),
        Push::Waiting {
            deadline: t0 + window
        }
    );
    assert_eq!(s.poll_timeout(), Some(t0 + window));
    s.handle_timeout(t0 + window - Duration::from_millis(1));
    assert!(events(&mut s).is_empty());
    s.handle_timeout(t0 + window);
    assert_eq!(events(&mut s), ["dropped m"]);
    // Still full: one that waits again keeps the full-since clock from t0.
    s.handle_read(t0 + Duration::from_secs(2), &client(OpCode::Pong, b""));
    s.send(t0 + Duration::from_secs(2), msg.clone());
    for secs in [4, 6, 8] {
        s.handle_read(t0 + Duration::from_secs(secs), &client(OpCode::Pong, b""));
    }
    s.handle_timeout(t0 + Duration::from_secs(9));
    let mut seen = events(&mut s);
    seen.retain(|e| e != "pong ");
    assert_eq!(seen, ["dropped m"]);
    s.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(events(&mut s), ["closed: WriteTimeout(10s)"]);
}

#[test]
fn room_lets_a_waiting_message_in_before_its_deadline() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    for m in [&b"a"[..], b"b", b"c"] {
        s.send(t0, frame::encode(OpCode::Text, m));
    }
    let written = write_all(&mut s, t0 + Duration::from_millis(50));
    assert_eq!(written, [0x81, 1, b'a', 0x81, 1, b'b', 0x81, 1, b'c']);
    s.handle_timeout(t0 + Duration::from_millis(100));
    assert!(events(&mut s).is_empty(), "nothing dropped");
}

#[test]
fn a_server_close_sends_the_queue_then_the_close_frame_then_completes() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.send(t0, frame::encode(OpCode::Text, b"last"));
    s.close(t0, 1000, "bye");
    assert!(!s.is_open());
    assert_eq!(
        s.send(t0, frame::encode(OpCode::Text, b"late")),
        Push::Closed
    );
    let mut expected = frame::encode(OpCode::Text, b"last").to_vec();
    expected.extend_from_slice(&frame::encode_close(1000, "bye"));
    assert_eq!(pending(&s), expected);
    assert!(
        events(&mut s).is_empty(),
        "not complete before the frame is written"
    );
    let t1 = t0 + Duration::from_millis(5);
    write_all(&mut s, t1);
    assert_eq!(events(&mut s), ["close", "closed"]);
    assert_eq!(s.linger(), Some(t1 + Duration::from_secs(10)));
    assert!(!s.peer_closed(), "the peer's close frame is still to come");
}

#[test]
fn a_server_close_completes_at_its_deadline_when_the_peer_never_reads() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    for _ in 0..5 {
        s.send(t0, frame::encode(OpCode::Text, b"x"));
    }
    s.handle_write_blocked(t0);
    // The deadline is the write timeout after the close began.
    let deadline = t0 + Duration::from_secs(10);
    s.close(t0, 1000, "");
    assert_eq!(s.poll_timeout(), Some(deadline));
    s.handle_timeout(deadline - Duration::from_millis(1));
    assert!(events(&mut s).is_empty());
    s.handle_timeout(deadline);
    assert_eq!(events(&mut s), ["close", "closed"]);
    assert_eq!(s.linger(), None);
}

#[test]
fn a_server_close_without_deadline_waits_for_force_close() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.close_shared(frame::encode_close(1001, ""));
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0 + Duration::from_secs(3600));
    assert!(events(&mut s).is_empty());
    s.force_close();
    assert_eq!(events(&mut s), ["closed: Forced"]);
}

#[test]
fn the_peer_going_away_completes_a_server_close() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.close_shared(frame::encode_close(1000, ""));
    s.handle_eof();
    assert_eq!(events(&mut s), ["close", "closed"]);
    // The session is over: nothing more, however often it is told.
    s.handle_eof();
    s.force_close();
    assert!(events(&mut s).is_empty());
}

#[test]
fn eof_while_open_is_an_error() {
    let mut s = Session::new(config(), Instant::now());
    s.handle_eof();
    let seen = events(&mut s);
    assert_eq!(seen.len(), 1);
    assert!(seen[0].starts_with("closed: Io("), "{seen:?}");
}

#[test]
fn the_peers_close_is_answered_with_its_code_after_earlier_replies() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    let mut input = client(OpCode::Text, b"hello");
    input.extend(client_close(1000));
    s.handle_read(t0, &input);
    // The message's listener runs first and may queue a reply ahead of the close answer.
    match s.poll_event() {
        Some(Event::Message { data, binary }) => {
            assert_eq!((&data[..], binary), (&b"hello"[..], false));
        }
        other => panic!("expected the message, got {other:?}"),
    }
    assert_eq!(
        s.send(t0, frame::encode(OpCode::Text, b"echo")),
        Push::Queued
    );
    assert_eq!(events(&mut s), ["closed"]);
    let mut expected = frame::encode(OpCode::Text, b"echo").to_vec();
    expected.extend_from_slice(&frame::encode_close(1000, ""));
    assert_eq!(pending(&s), expected);
    assert_eq!(s.linger(), Some(t0 + Duration::from_secs(10)));
    assert!(
        s.peer_closed(),
        "the peer sends nothing after its close frame"
    );
}

#[test]
fn a_close_with_another_code_or_none_is_an_error_and_echoed() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.handle_read(t0, &client_close(4000));
    assert_eq!(
        events(&mut s),
        ["closed: PeerClosed { code: Some(4000), reason: \"\" }"]
    );
    assert_eq!(pending(&s), frame::encode_close(4000, "").to_vec());

    let mut s = Session::new(config(), t0);
    s.handle_read(t0, &client(OpCode::Close, b""));
    assert_eq!(
        events(&mut s),
        ["closed: PeerClosed { code: None, reason: \"\" }"]
    );
    assert_eq!(
        pending(&s),
        [0x88, 0x00],
        "an empty close is answered with an empty one"
    );
}

#[test]
fn the_peers_close_code_and_reason_are_echoed() {
    let t0 = Instant::now();
    let close = |code: u16, reason: &str| {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        client(OpCode::Close, &payload)
    };
    let mut s = Session::new(config(), t0);
    s.handle_read(t0, &close(1000, "bye"));
    assert_eq!(events(&mut s), ["closed"]);
    assert_eq!(pending(&s), [0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']);

    // The longest reason a control frame holds (RFC 6455 §5.5: 125 bytes with the code).
    let long = format!("{}é", "a".repeat(121));
    let mut s = Session::new(config(), t0);
    s.handle_read(t0, &close(4001, &long));
    events(&mut s);
    let mut expected = vec![0x88, 125, 0x0f, 0xa1];
    expected.extend_from_slice(long.as_bytes());
    assert_eq!(pending(&s), expected);
}

#[test]
fn a_violation_comes_after_the_frames_before_it_and_sends_its_close_code() {
    let t0 = Instant::now();
    let cases: [(Vec<u8>, u16, &str); 3] = [
        (vec![0x83, 0x80, 1, 2, 3, 4], 1002, "Protocol(Protocol("),
        (client(OpCode::Text, &[0xff]), 1007, "Protocol(InvalidUtf8)"),
        (
            client(OpCode::Binary, &[0; 2000]),
            1009,
            "Protocol(TooLarge",
        ),
    ];
    for (bad, code, error) in cases {
        let mut s = Session::new(config(), t0);
        let mut input = client(OpCode::Text, b"ok");
        input.extend(bad);
        s.handle_read(t0, &input);
        let seen = events(&mut s);
        assert_eq!(seen[0], "message false ok");
        assert!(seen[1].starts_with(&format!("closed: {error}")), "{seen:?}");
        assert_eq!(seen.len(), 2);
        assert_eq!(pending(&s), frame::encode_close(code, "").to_vec());
    }
}

#[test]
fn nothing_the_peer_sent_after_a_server_close_is_delivered() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    let mut input = client(OpCode::Text, b"one");
    input.extend(client(OpCode::Text, b"two"));
    input.extend(client(OpCode::Ping, b""));
    s.handle_read(t0, &input);
    assert!(matches!(s.poll_event(), Some(Event::Message { .. })));
    // The first message's listener closes the connection.
    s.close_shared(frame::encode_close(1000, ""));
    assert!(events(&mut s).is_empty());
    assert_eq!(
        pending(&s),
        frame::encode_close(1000, "").to_vec(),
        "no pong either"
    );
}

#[test]
fn a_pong_flood_during_a_close_changes_nothing() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.close(t0, 1000, "");
    let flood: Vec<u8> = (0..5000).flat_map(|_| client(OpCode::Pong, b"p")).collect();
    s.handle_read(t0, &flood);
    assert!(events(&mut s).is_empty());
    assert_eq!(pending(&s), frame::encode_close(1000, "").to_vec());
    write_all(&mut s, t0);
    assert_eq!(events(&mut s), ["close", "closed"]);
}

#[test]
fn pongs_to_a_ping_flood_stay_bounded_and_the_flooder_is_torn_down() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    let ping = client(OpCode::Ping, b"0123456789");
    // The peer reads nothing: every pong stays queued.
    s.handle_write_blocked(t0);
    for _ in 0..MAX_UNANSWERED_PINGS {
        s.handle_read(t0, &ping);
        assert!(matches!(s.poll_event(), Some(Event::Ping(_))));
    }
    assert!(s.is_open());
    let queued = pending(&s).len();
    assert!(
        queued <= 12 * crate::ws::queue::MAX_QUEUED_PONGS,
        "{queued} bytes of pongs"
    );
    s.handle_read(t0, &ping);
    assert_eq!(events(&mut s), ["closed: PingFlood"]);
    assert_eq!(s.linger(), None);
}

#[test]
fn a_peer_that_reads_its_pongs_may_ping_for_ever() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    for _ in 0..3 * MAX_UNANSWERED_PINGS {
        s.handle_read(t0, &client(OpCode::Ping, b""));
        assert_eq!(events(&mut s), ["ping "]);
        assert_eq!(write_all(&mut s, t0), [0x8a, 0x00]);
    }
    assert!(s.is_open());
}

#[test]
fn ten_pings_in_one_read_get_ten_pongs() {
    // Autobahn case 2.10 expects a pong per ping when there are few.
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    let input: Vec<u8> = (0..10u8).flat_map(|i| client(OpCode::Ping, &[i])).collect();
    s.handle_read(t0, &input);
    assert_eq!(events(&mut s).len(), 10);
    let expected: Vec<u8> = (0..10u8)
        .flat_map(|i| frame::encode(OpCode::Pong, &[i]).to_vec())
        .collect();
    assert_eq!(pending(&s), expected);
}

#[test]
fn a_failed_server_side_sends_its_close_code_and_lingers() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.fail(t0, 1011);
    assert_eq!(events(&mut s), ["closed: Failed"]);
    assert_eq!(pending(&s), frame::encode_close(1011, "").to_vec());
    assert_eq!(s.linger(), Some(t0 + Duration::from_secs(10)));
}

#[test]
fn the_keepalive_ping_matches_the_encoder() {
    assert_eq!(&PING_FRAME[..], &frame::encode(OpCode::Ping, b"")[..]);
}

#[test]
fn with_deflate_agreed_data_goes_out_compressed_and_compressed_data_comes_in() {
    let t0 = Instant::now();
    let cfg = deflate_config();
    let json: Vec<u8> = br#"{"id":1,"symbol":"ETH-USD","side":"buy","price":3100.25},"#
        .repeat(12)
        .into_iter()
        .take(600)
        .collect();
    let plain = frame::MessageType::Text.frame(&json);

    // The route offers it, but this client did not ask: the frame goes out as it is.
    let mut s = Session::new(Arc::clone(&cfg), t0);
    assert_eq!(s.send(t0, plain.clone()), Push::Queued);
    assert_eq!(write_all(&mut s, t0), plain);

    let mut s = Session::new(cfg, t0);
    s.accept_deflate(deflate::negotiate(["permessage-deflate"]).unwrap());
    assert_eq!(s.send(t0, plain.clone()), Push::Queued);
    let out = write_all(&mut s, t0);
    assert_eq!(out[0], 0xC1, "FIN, RSV1, text");
    assert!(out.len() < plain.len() / 2, "{}", out.len());
    assert_eq!(deflate::inflate(&out[2..], 1024).unwrap(), json);
    // Under the threshold: plain.
    assert_eq!(
        s.send(t0, frame::MessageType::Text.frame(b"hi")),
        Push::Queued
    );
    assert_eq!(write_all(&mut s, t0), [0x81, 2, b'h', b'i']);

    // §7.2.3.1's "Hello", compressed by the client.
    let mut hello = client(OpCode::Text, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    hello[0] |= 0x40;
    s.handle_read(t0, &hello);
    assert_eq!(events(&mut s), ["message false Hello"]);
}

#[test]
fn a_dropped_message_is_reported_as_it_was_given_not_as_compressed() {
    let t0 = Instant::now();
    let cfg = deflate_config();
    let text = "compressible ".repeat(40);
    let mut s = Session::new(cfg, t0);
    s.accept_deflate(deflate::negotiate(["permessage-deflate"]).unwrap());
    let msg = frame::MessageType::Text.frame(text.as_bytes());
    assert_eq!(s.send(t0, msg.clone()), Push::Queued);
    assert_eq!(s.send(t0, msg.clone()), Push::Queued);
    assert!(matches!(s.send(t0, msg.clone()), Push::Waiting { .. }));
    assert!(
        pending(&s)[0] & 0x40 != 0,
        "what is queued went out compressed"
    );
    s.handle_timeout(t0 + Duration::from_millis(100));
    assert_eq!(events(&mut s), [format!("dropped {text}")]);
}

// ---- the inbound rate limit -------------------------------------------------------------------

fn limited(rate: u32) -> Arc<Config> {
    Arc::new(
        Config {
            client_message_rate: rate,
            ..(*config()).clone()
        }
        .effective(),
    )
}

/// Takes `n` tokens at `now`; what each got.
fn take_n(bucket: &mut RateLimit, rate: u32, now: Instant, n: usize) -> Vec<Admit> {
    (0..n)
        .map(|_| {
            let (next, admit) = bucket.take(rate, now);
            *bucket = next;
            admit
        })
        .collect()
}

#[test]
fn a_bucket_allows_a_burst_of_its_rate_then_refuses() {
    let t0 = Instant::now();
    let mut b = RateLimit::full(5, t0);
    assert_eq!(take_n(&mut b, 5, t0, 5), vec![Admit::Yes; 5]);
    assert_eq!(b.tokens, 0);
    assert_eq!(take_n(&mut b, 5, t0, 5), vec![Admit::Refused; 5]);
    // One refusal more than the rate since the bucket was full closes.
    assert_eq!(take_n(&mut b, 5, t0, 1), vec![Admit::Close]);
    assert_eq!(b.refused, 6);
}

#[test]
fn a_bucket_refills_at_its_rate_per_second() {
    let t0 = Instant::now();
    let mut b = RateLimit::full(10, t0);
    take_n(&mut b, 10, t0, 10);
    // 10/s: one token per 100 ms, none before.
    assert_eq!(b.refill(10, t0 + Duration::from_millis(99)).tokens, 0);
    assert_eq!(b.refill(10, t0 + Duration::from_millis(100)).tokens, 1);
    assert_eq!(b.refill(10, t0 + Duration::from_millis(550)).tokens, 5);
    // The half token earned by 550 ms is kept for the next refill.
    let at_550 = b.refill(10, t0 + Duration::from_millis(550));
    assert_eq!(at_550.refilled.instant(), t0 + Duration::from_millis(500));
    assert_eq!(at_550.refill(10, t0 + Duration::from_millis(600)).tokens, 6);
    // Taking one every 100 ms is sustained for ever.
    let mut now = t0;
    for _ in 0..50 {
        now += Duration::from_millis(100);
        assert_eq!(take_n(&mut b, 10, now, 1), vec![Admit::Yes]);
    }
    assert_eq!(take_n(&mut b, 10, now, 1), vec![Admit::Refused]);
}

#[test]
fn a_bucket_never_refills_beyond_its_burst() {
    let t0 = Instant::now();
    let mut b = RateLimit::full(3, t0);
    take_n(&mut b, 3, t0, 4);
    assert_eq!(b.refused, 1);
    let later = b.refill(3, t0 + Duration::from_secs(3600));
    assert_eq!(later, RateLimit::full(3, t0 + Duration::from_secs(3600)));
    let mut later = later;
    assert_eq!(
        take_n(&mut later, 3, t0 + Duration::from_secs(3600), 4),
        vec![Admit::Yes, Admit::Yes, Admit::Yes, Admit::Refused]
    );
}

#[test]
fn a_clock_that_does_not_move_refills_nothing() {
    let t0 = Instant::now() + Duration::from_secs(1);
    let mut b = RateLimit::full(2, t0);
    take_n(&mut b, 2, t0, 2);
    assert_eq!(b.refill(2, t0), b);
    // Nor does one that goes back.
    assert_eq!(b.refill(2, t0 - Duration::from_secs(1)), b);
    assert_eq!(take_n(&mut b, 2, t0, 1), vec![Admit::Refused]);
}

#[test]
fn a_slow_enough_client_starts_afresh_once_its_bucket_is_full() {
    let t0 = Instant::now();
    let mut b = RateLimit::full(2, t0);
    take_n(&mut b, 2, t0, 4);
    assert_eq!(b.refused, 2);
    // Half a second: one token, refusals still count.
    let t1 = t0 + Duration::from_millis(500);
    assert_eq!(take_n(&mut b, 2, t1, 1), vec![Admit::Yes]);
    assert_eq!(b.refused, 2);
    // A full bucket again forgets them.
    let t2 = t1 + Duration::from_secs(1);
    assert_eq!(
        take_n(&mut b, 2, t2, 3),
        vec![Admit::Yes, Admit::Yes, Admit::Refused]
    );
    assert_eq!(b.refused, 1);
}

#[test]
fn a_session_without_a_limit_delivers_everything_and_keeps_no_bucket() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    assert!(s.rate.is_none());
    let burst: Vec<u8> = (0..50).flat_map(|_| client(OpCode::Text, b"m")).collect();
    s.handle_read(t0, &burst);
    assert_eq!(events(&mut s), vec!["message false m"; 50]);
}

#[test]
fn a_session_refuses_past_its_limit_and_closes_1008_on_a_flood() {
    let t0 = Instant::now();
    let mut s = Session::new(limited(3), t0);
    let burst: Vec<u8> = (0..10u8)
        .flat_map(|i| client(OpCode::Text, &[b'0' + i]))
        .collect();
    s.handle_read(t0, &burst);
    assert_eq!(
        events(&mut s),
        vec![
            "message false 0",
            "message false 1",
            "message false 2",
            "limited 3",
            "limited 4",
            "limited 5",
            // The fourth refusal (more than the rate) closes; 7, 8 and 9 are dropped.
            "limited 6",
        ]
    );
    assert!(!s.is_open());
    assert_eq!(
        write_all(&mut s, t0),
        frame::encode_close(1008, RATE_LIMIT_REASON)
    );
    assert_eq!(events(&mut s), vec!["close", "closed"]);
}

#[test]
fn a_session_under_its_limit_is_never_refused() {
    let t0 = Instant::now();
    let mut s = Session::new(limited(3), t0);
    let mut now = t0;
    for _ in 0..30 {
        // Three every second: the whole rate, never more.
        let three: Vec<u8> = (0..3).flat_map(|_| client(OpCode::Text, b"m")).collect();
        s.handle_read(now, &three);
        assert_eq!(events(&mut s), vec!["message false m"; 3]);
        now += Duration::from_secs(1);
        s.handle_timeout(now);
        write_all(&mut s, now);
    }
    assert!(s.is_open());
    // Pings and pongs are not messages: they never use up the bucket.
    let pings: Vec<u8> = (0..10).flat_map(|_| client(OpCode::Ping, b"")).collect();
    s.handle_read(now, &pings);
    assert_eq!(events(&mut s), vec!["ping "; 10]);
    let three: Vec<u8> = (0..3).flat_map(|_| client(OpCode::Text, b"m")).collect();
    s.handle_read(now, &three);
    assert_eq!(events(&mut s), vec!["message false m"; 3]);
}

#[test]
fn a_session_over_its_limit_by_a_little_loses_the_excess() {
    let t0 = Instant::now();
    let mut s = Session::new(limited(4), t0);
    // Five in the first second: one refused, and the connection stays.
    let five: Vec<u8> = (0..5).flat_map(|_| client(OpCode::Text, b"m")).collect();
    s.handle_read(t0, &five);
    let mut expected = vec!["message false m"; 4];
    expected.push("limited m");
    assert_eq!(events(&mut s), expected);
    assert!(s.is_open());
}

// ---- the inbound byte limit -------------------------------------------------------------------

fn byte_limited(message_rate: u32, byte_rate: u32) -> Arc<Config> {
    Arc::new(
        Config {
            client_message_rate: message_rate,
            client_byte_rate: byte_rate,
            ..(*config()).clone()
        }
        .effective(),
    )
}

#[test]
fn a_cost_takes_that_many_tokens_and_one_above_the_burst_needs_a_full_bucket() {
    let t0 = Instant::now();
    let b = RateLimit::full(100, t0);
    let (b, admit) = b.take_cost(100, 60, 5, t0);
    assert_eq!((admit, b.tokens), (Admit::Yes, 40));
    // 50 do not fit in 40: refused, and nothing is taken.
    let (b, admit) = b.take_cost(100, 50, 5, t0);
    assert_eq!((admit, b.tokens, b.refused), (Admit::Refused, 40, 1));
    // A message larger than the burst passes only with a full bucket, and empties it.
    let full = RateLimit::full(100, t0);
    let (after, admit) = full.take_cost(100, 5_000, 5, t0);
    assert_eq!((admit, after.tokens), (Admit::Yes, 0));
    // More refusals than the patience close.
    let mut b = after;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (next, admit) = b.take_cost(100, 10, 2, t0);
        b = next;
        seen.push(admit);
    }
    assert_eq!(seen, [Admit::Refused, Admit::Refused, Admit::Close]);
}

#[test]
fn a_message_refused_by_one_bucket_takes_nothing_from_the_other() {
    let t0 = Instant::now();
    let mut limit = InboundLimit::new(10, 100, t0).unwrap();
    assert_eq!(limit.admit(10, 100, 80, t0), Admit::Yes);
    // Refused for its size: the message bucket keeps its token.
    assert_eq!(limit.admit(10, 100, 30, t0), Admit::Refused);
    assert_eq!(limit.messages.unwrap().tokens, 9);
    assert_eq!(limit.bytes.unwrap().refused, 1);
    // Small ones still pass until the message count runs out; then the bytes are kept.
    for _ in 0..9 {
        assert_eq!(limit.admit(10, 100, 1, t0), Admit::Yes);
    }
    assert_eq!(limit.bytes.unwrap().tokens, 11);
    assert_eq!(limit.admit(10, 100, 1, t0), Admit::Refused);
    assert_eq!(limit.bytes.unwrap().tokens, 11);
    assert_eq!(limit.messages.unwrap().refused, 1);
    // Both buckets fit the 32 bytes docs/behaviour.md gives them.
    assert!(std::mem::size_of::<InboundLimit>() <= 32);
    // No limit at all is no bucket at all.
    assert_eq!(InboundLimit::new(0, 0, t0), None);
    let only_bytes = InboundLimit::new(0, 5, t0).unwrap();
    assert_eq!(only_bytes.messages, None);
}

#[test]
fn a_session_refuses_bytes_past_its_byte_rate_and_closes_1008_when_it_keeps_on() {
    let t0 = Instant::now();
    let mut s = Session::new(byte_limited(0, 10), t0);
    // 10 bytes a second: "12345" and "67890" pass, "x" does not.
    let mut burst: Vec<u8> = client(OpCode::Text, b"12345");
    burst.extend(client(OpCode::Text, b"67890"));
    burst.extend(client(OpCode::Text, b"x"));
    s.handle_read(t0, &burst);
    assert_eq!(
        events(&mut s),
        ["message false 12345", "message false 67890", "limited x"]
    );
    // Half a second later, 5 bytes are back.
    let t1 = t0 + Duration::from_millis(500);
    s.handle_read(t1, &client(OpCode::Text, b"abcde"));
    assert_eq!(events(&mut s), ["message false abcde"]);
    // A flood of refusals: the 33rd since the bucket was last full closes.
    let flood: Vec<u8> = (0..40).flat_map(|_| client(OpCode::Text, b"y")).collect();
    s.handle_read(t1, &flood);
    let seen = events(&mut s);
    assert_eq!(seen.len(), BYTE_REFUSALS_BEFORE_CLOSE as usize);
    assert!(seen.iter().all(|e| e == "limited y"), "{seen:?}");
    assert!(!s.is_open());
    assert_eq!(
        write_all(&mut s, t1),
        frame::encode_close(1008, RATE_LIMIT_REASON)
    );
}

#[test]
fn the_first_close_frame_names_the_code_the_session_ended_with() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    assert_eq!(s.close_code(), None);
    s.close(t0, 4001, "bye");
    assert_eq!(s.close_code(), Some(4001));
    // The peer's answer does not change it.
    s.handle_read(t0, &client_close(1000));
    events(&mut s);
    assert_eq!(s.close_code(), Some(4001));

    let mut s = Session::new(config(), t0);
    s.handle_read(t0, &client_close(1001));
    events(&mut s);
    assert_eq!(s.close_code(), Some(1001));
}

// ---- liveness when the shard is late, and the ping schedule ------------------------------------

/// `ms` milliseconds after `t0`.
fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

#[test]
fn the_liveness_rule_blames_only_silence_seen_on_time() {
    let t0 = Instant::now();
    let deadline = at(t0, 3000);
    let window = Duration::from_secs(2);
    assert_eq!(
        judge_silence(deadline, at(t0, 2999), 0, window),
        Liveness::Alive
    );
    assert_eq!(judge_silence(deadline, deadline, 0, window), Liveness::Idle);
    let within = deadline + LATE_TOLERANCE;
    assert_eq!(judge_silence(deadline, within, 0, window), Liveness::Idle);
    let late = at(t0, 9000);
    assert_eq!(
        judge_silence(deadline, late, 0, window),
        Liveness::Recheck(late + window)
    );
    assert_eq!(
        judge_silence(deadline, late, MAX_LATE_RECHECKS - 1, window),
        Liveness::Recheck(late + window)
    );
    assert_eq!(
        judge_silence(deadline, late, MAX_LATE_RECHECKS, window),
        Liveness::Idle,
        "the rechecks are bounded"
    );
    assert_eq!(
        answer_window(Duration::from_secs(1), Duration::from_secs(3)),
        window
    );
    assert_eq!(
        answer_window(Duration::from_secs(25), Duration::from_secs(75)),
        Duration::from_secs(50)
    );
    assert_eq!(
        answer_window(Duration::from_secs(5), Duration::from_secs(5)),
        Duration::from_secs(5),
        "an idle timeout no longer than the interval is the whole window"
    );
}

#[test]
fn a_shard_that_fell_behind_does_not_drop_its_clients() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    // On time: pinged at 1 s, answered at 1.1 s.
    s.handle_timeout(at(t0, 1000));
    write_all(&mut s, at(t0, 1000));
    s.handle_read(at(t0, 1100), &client(OpCode::Pong, b""));
    assert_eq!(events(&mut s), ["pong "]);
    // Then the shard is blocked (a long listener) from 1.2 s to 9 s: the pongs the client sent
    // meanwhile sit unread in the socket. Its timer pass runs first, 4.9 s after the deadline.
    s.handle_timeout(at(t0, 9000));
    assert!(s.is_open(), "the silence was the shard's own");
    assert_eq!(
        write_all(&mut s, at(t0, 9000)),
        [0x89, 0x00],
        "a fresh ping"
    );
    assert_eq!(
        s.poll_timeout(),
        Some(at(t0, 10_000)),
        "the next regular ping"
    );
    // The read task catches up: the client was there all along.
    s.handle_read(at(t0, 9010), &client(OpCode::Pong, b""));
    assert_eq!(events(&mut s), ["pong "]);
    for ms in [10_000, 11_000, 12_000] {
        s.handle_timeout(at(t0, ms));
    }
    assert!(s.is_open());
    assert!(events(&mut s).is_empty());
    // Silent from 9.01 s, seen on time: the ordinary rule holds.
    s.handle_timeout(at(t0, 12_010));
    assert_eq!(events(&mut s), ["closed: IdleTimeout(3s)"]);
}

#[test]
fn a_late_shard_judges_a_client_on_a_ping_it_had_time_to_answer() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    // Silent from the start; the shard first looks at 8 s, long past the 3 s deadline.
    s.handle_timeout(at(t0, 8000));
    assert!(s.is_open());
    assert_eq!(s.poll_timeout(), Some(at(t0, 9000)));
    // The pings at 8 s and 9 s are answered at 9.5 s: a whole answer window was given.
    s.handle_timeout(at(t0, 9000));
    s.handle_read(at(t0, 9500), &client(OpCode::Pong, b""));
    s.handle_timeout(at(t0, 10_000));
    assert!(s.is_open());
    assert_eq!(events(&mut s), ["pong "]);
}

#[test]
fn a_truly_silent_client_is_dropped_within_the_bound_even_by_a_late_shard() {
    let t0 = Instant::now();
    let config = config();
    let window = answer_window(config.ping_interval, config.read_idle_timeout);
    let mut s = Session::new(Arc::clone(&config), t0);
    // Every look comes 0.5 s late (past the tolerance), the client never answers.
    let mut looks = 0;
    let mut last = t0;
    while s.is_open() {
        let due = s.poll_timeout().expect("open: a deadline");
        last = due + Duration::from_millis(500);
        s.handle_timeout(last);
        looks += 1;
        assert!(looks < 100, "never dropped");
    }
    assert_eq!(events(&mut s), ["closed: IdleTimeout(3s)"]);
    // The documented bound: the deadline, plus MAX_LATE_RECHECKS answer windows, plus the
    // shard's lateness at each judging look.
    let bound = at(t0, 3000)
        + window * u32::from(MAX_LATE_RECHECKS)
        + Duration::from_millis(500) * (u32::from(MAX_LATE_RECHECKS) + 1);
    assert!(last <= bound, "dropped at {:?}", last - t0);
    assert!(
        last >= at(t0, 3000) + window,
        "the late look granted a recheck"
    );
}

#[test]
fn a_look_within_the_tolerance_drops_a_silent_client_at_once() {
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.handle_timeout(at(t0, 3000) + LATE_TOLERANCE);
    assert_eq!(events(&mut s), ["closed: IdleTimeout(3s)"]);
}

#[test]
fn a_late_look_keeps_each_connections_ping_phase() {
    let t0 = Instant::now();
    let mut a = Session::new(config(), t0);
    let mut b = Session::new(config(), at(t0, 400));
    // One late pass serves both: each keeps its own phase instead of both moving to 2.7 s.
    for s in [&mut a, &mut b] {
        s.handle_read(at(t0, 2600), &client(OpCode::Pong, b""));
        s.handle_timeout(at(t0, 2700));
        assert_eq!(pending(s), [0x89, 0x00], "the late ping goes out");
    }
    assert_eq!(a.poll_timeout(), Some(at(t0, 3000)));
    assert_eq!(b.poll_timeout(), Some(at(t0, 3400)));
    assert_eq!(
        next_ping_after(at(t0, 1000), at(t0, 1000), Duration::from_secs(1)),
        at(t0, 2000)
    );
}

#[test]
fn first_pings_are_spread_over_the_interval() {
    let interval = Duration::from_secs(25);
    let mut buckets = [0u32; 10];
    for slot in 0..1000u64 {
        let delay = first_ping_delay(interval, slot);
        assert!(delay > interval && delay <= 2 * interval, "{delay:?}");
        let past = delay - interval;
        buckets[(past.as_nanos() * 10 / interval.as_nanos()).min(9) as usize] += 1;
    }
    // Consecutive slots (a burst of accepts) cover the interval evenly.
    assert!(
        buckets.iter().all(|&n| (90..=110).contains(&n)),
        "{buckets:?}"
    );
    let t0 = Instant::now();
    let mut s = Session::new(config(), t0);
    s.spread_pings(t0, 7);
    let first = t0 + first_ping_delay(Duration::from_secs(1), 7);
    assert_eq!(s.poll_timeout(), Some(first));
    s.handle_timeout(first);
    assert_eq!(pending(&s), [0x89, 0x00]);
    assert_eq!(s.poll_timeout(), Some(first + Duration::from_secs(1)));
}

#[test]
fn a_recheck_between_regular_pings_sends_one_of_its_own() {
    let t0 = Instant::now();
    let config = Arc::new(
        Config {
            ping_interval: Duration::from_secs(10),
            read_idle_timeout: Duration::from_secs(3),
            ..Config::default()
        }
        .effective(),
    );
    let mut s = Session::new(config, t0);
    s.handle_timeout(at(t0, 8000));
    assert!(s.is_open());
    assert_eq!(pending(&s), [0x89, 0x00], "judged on a ping it was sent");
    assert_eq!(s.poll_timeout(), Some(at(t0, 10_000)));
    s.handle_timeout(at(t0, 10_000));
    write_all(&mut s, at(t0, 10_000));
    assert_eq!(s.poll_timeout(), Some(at(t0, 11_000)), "the recheck");
    s.handle_timeout(at(t0, 11_000));
    assert_eq!(events(&mut s), ["closed: IdleTimeout(3s)"]);
}
