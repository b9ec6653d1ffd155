//! Settings from flags, the environment and the TOML file, and their errors.

use super::*;

#[test]
fn file_fills_only_what_is_unset() {
    let mut args = Args {
        ping_interval: Some(Duration::from_secs(2)),
        ..Args::default()
    };
    let text =
        "listen = \"127.0.0.1:9000\"\nping-interval = \"9s\"\nmax_message_size = \"64KiB\"\n\
                shards = 3\norigins = [\"https://a\", \"https://b\"]\nmode = \"relay\"\n\
                subprotocols = [\"chat.v2\", \"chat\"]\ndeflate-min-size = \"1KiB\"\n";
    fill_from_file(&mut args, text).unwrap();
    let s = Settings::from_args(args);
    assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(
        s.config.ping_interval,
        Duration::from_secs(2),
        "the flag wins"
    );
    assert_eq!(s.config.max_message_size, 64 << 10);
    assert_eq!(s.shards, Some(3));
    assert_eq!(s.origins, ["https://a", "https://b"]);
    assert_eq!(s.mode, Mode::Relay);
    assert_eq!(s.config.subprotocols, ["chat.v2", "chat"]);
    assert_eq!(
        s.config.deflate,
        Some(Deflate {
            level: 1,
            min_size: 1024
        })
    );
    let mut args = Args::default();
    fill_from_file(&mut args, "deflate = false\ndeflate-level = 9").unwrap();
    assert_eq!(Settings::from_args(args).config.deflate, None);
}

#[test]
fn file_errors_name_the_key() {
    let mut args = Args::default();
    let e = fill_from_file(&mut args, "ping-interval = \"soon\"").unwrap_err();
    assert!(e.starts_with("ping-interval: invalid duration"), "{e}");
    let e = fill_from_file(&mut args, "pingg = 1").unwrap_err();
    assert_eq!(e, "unknown setting \"pingg\"");
    let e = fill_from_file(&mut args, "shards = 0").unwrap_err();
    assert!(e.contains("shards \"0\""), "{e}");
    let e = fill_from_file(&mut args, "subprotocols = \"chat, a b\"").unwrap_err();
    assert_eq!(
        e,
        "subprotocols: invalid subprotocol \"a b\": expected an HTTP token such as chat.v2"
    );
    let e = fill_from_file(&mut args, "deflate = \"maybe\"").unwrap_err();
    assert_eq!(e, "deflate: expected on or off, got \"maybe\"");
    let e = fill_from_file(&mut args, "deflate-level = 10").unwrap_err();
    assert_eq!(
        e,
        "deflate-level: expected a compression level from 0 to 9, got \"10\""
    );
}

#[test]
fn help_says_a_bare_number_is_seconds_and_the_parser_agrees() {
    use clap::CommandFactory;
    let short = Args::command().render_help().to_string();
    let long = Args::command().render_long_help().to_string();
    for help in [short, long] {
        assert!(help.contains("a bare number is seconds"), "{help}");
    }
    let a =
        Args::try_parse_from(["corecast", "--ping-interval", "3", "--write-timeout=1.5"]).unwrap();
    assert_eq!(a.ping_interval, Some(Duration::from_secs(3)));
    assert_eq!(a.write_timeout, Some(Duration::from_millis(1500)));
    let mut a = Args::default();
    fill_from_file(
        &mut a,
        "shutdown-timeout = 7\nhandshake-timeout = 0.5\ndrain-delay = 4",
    )
    .unwrap();
    assert_eq!(a.shutdown_timeout, Some(Duration::from_secs(7)));
    assert_eq!(a.drain_delay, Some(Duration::from_secs(4)));
    assert_eq!(a.handshake_timeout, Some(Duration::from_millis(500)));
}

#[test]
fn bad_addresses_numbers_and_file_syntax_say_what_is_allowed() {
    let err = |argv: &[&str]| {
        let argv = std::iter::once("corecast").chain(argv.iter().copied());
        match Args::try_parse_from(argv) {
            Ok(_) => String::new(),
            Err(e) => e.render().to_string(),
        }
    };
    let e = err(&["--listen", "localhost:8080"]);
    assert!(e.contains("expected IP:PORT"), "{e}");
    let e = err(&["--shards", "many"]);
    assert!(e.contains("expected a number from 1 to 65535"), "{e}");
    let e = err(&["--shards", "0"]);
    assert!(e.contains("expected a number from 1 to 65535"), "{e}");
    for flag in [
        "--max-connections",
        "--send-queue-size",
        "--max-topics",
        "--max-send-retry",
    ] {
        let e = err(&[flag, "lots"]);
        assert!(
            e.contains("invalid number \"lots\": expected"),
            "{flag}: {e}"
        );
    }
    let e = fill_from_file(&mut Args::default(), "mode = \"echo\"\nping-interval =\n").unwrap_err();
    assert!(e.starts_with("line 2: "), "{e}");
}

#[test]
fn defaults() {
    let s = Settings::from_args(Args::default());
    assert_eq!(s.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(
        s.api_listen,
        ApiListen::On("127.0.0.1:8081".parse().unwrap())
    );
    assert_eq!(s.mode, Mode::Push);
    assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(s.drain_delay, Duration::ZERO);
    assert!(s.origins.is_empty());
    assert!(s.config.subprotocols.is_empty());
    assert_eq!(s.config.deflate, Some(Deflate::default()));
    assert_eq!(s.config.client_message_rate, 100);
}

#[test]
fn client_byte_rate_defaults_to_1mib_and_takes_sizes_from_flag_and_file() {
    let s = Settings::from_args(Args::try_parse_from(["corecast"]).unwrap());
    assert_eq!(s.config.client_byte_rate, 1 << 20);
    let a = Args::try_parse_from(["corecast", "--client-byte-rate", "64KiB"]).unwrap();
    assert_eq!(Settings::from_args(a).config.client_byte_rate, 64 << 10);
    let mut args = Args::try_parse_from(["corecast"]).unwrap();
    fill_from_file(&mut args, "client-byte-rate = \"0\"").unwrap();
    assert_eq!(Settings::from_args(args).config.client_byte_rate, 0);
    let err = Args::try_parse_from(["corecast", "--client-byte-rate", "8GiB"]).unwrap_err();
    assert!(err.to_string().contains("at most 4GiB"), "{err}");
}

#[test]
fn client_message_rate_from_flag_and_file_and_zero_turns_it_off() {
    let a = Args::try_parse_from(["corecast", "--client-message-rate", "0"]).unwrap();
    assert_eq!(Settings::from_args(a).config.client_message_rate, 0);
    let mut args = Args::default();
    fill_from_file(&mut args, "client-message-rate = 7").unwrap();
    assert_eq!(Settings::from_args(args).config.client_message_rate, 7);
    let mut args = Args::default();
    let err = fill_from_file(&mut args, "client-message-rate = -1").unwrap_err();
    assert!(err.contains("client-message-rate"), "{err}");
}

#[test]
fn jwt_settings() {
    let dir = std::env::temp_dir().join(format!("corecast-cli-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let path = secret.to_str().unwrap();
    // The trailing newline is not part of the secret.
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.";
    let s = load(&["--jwt-secret-file", path, "--jwt-leeway", "2m"]).unwrap();
    let verifier = s.auth.unwrap();
    assert_eq!(verifier.algorithms(), ["HS256", "HS384", "HS512"]);
    assert!(format!("{verifier:?}").contains("leeway: 120"));
    assert_eq!(verifier.grace(), 30);
    let s = load(&["--jwt-secret-file", path, "--jwt-refresh-grace", "5s"]).unwrap();
    assert_eq!(s.auth.unwrap().grace(), 5);
    assert_eq!(verifier.refusal_limit(), 20);
    let s = load(&["--jwt-secret-file", path, "--jwt-max-refusals", "0"]).unwrap();
    assert_eq!(s.auth.unwrap().refusal_limit(), 0);
    let e = load(&["--jwt-max-refusals", "5"]).unwrap_err();
    assert!(e.contains("need --jwt-secret-file"), "{e}");
    let e = load(&["--jwt-refresh-grace", "5s"]).unwrap_err();
    assert!(e.contains("need --jwt-secret-file"), "{e}");
    assert!(verifier.verify(token, 0).is_err());
    let both = load(&["--jwt-secret-file", path, "--jwt-public-key-file", path]);
    assert!(both.unwrap_err().contains("exclude each other"));
    let e = load(&["--jwt-public-key-file", path]).unwrap_err();
    assert!(e.contains("not a PEM public key"), "{e}");
    let e = load(&["--jwt-audience", "x"]).unwrap_err();
    assert!(e.contains("need --jwt-secret-file"), "{e}");
    assert!(load(&[]).unwrap().auth.is_none());
    let mut args = Args::default();
    let text = format!(
        "jwt-secret-file = {path:?}\njwt_issuer = \"me\"\njwt-leeway = 1\njwt-refresh-grace = \"1m\""
    );
    fill_from_file(&mut args, &text).unwrap();
    assert_eq!(args.jwt_secret_file.as_deref(), Some(secret.as_path()));
    assert_eq!(args.jwt_leeway, Some(Duration::from_secs(1)));
    assert_eq!(args.jwt_refresh_grace, Some(Duration::from_secs(60)));
    let verifier = super::verifier(&args).unwrap().unwrap();
    assert!(format!("{verifier:?}").contains("issuer: Some(\"me\")"));
    assert_eq!(verifier.grace(), 60);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Held while a test sets a `CORECAST_*` variable, and by every load: a load in another
/// test would see the variable.
static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Flags and environment, then the file, as the binary loads them.
fn load(extra: &[&str]) -> Result<Settings, String> {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    load_unlocked(extra)
}

fn load_unlocked(extra: &[&str]) -> Result<Settings, String> {
    let argv = ["corecast"].iter().chain(extra).map(Into::into).collect();
    Settings::load_from(argv)
}

#[test]
fn backend_flags() {
    let dir = std::env::temp_dir().join(format!("corecast-cli-backend-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let s = load(&[
        "--webhook",
        "http://127.0.0.1:9/events",
        "--webhook-events",
        "message, disconnect",
        "--hook-subscribe",
        "http://127.0.0.1:9/subscribe",
        "--hook-connect=http://127.0.0.1:9/connect",
        "--backend-timeout",
        "500ms",
        "--backend-max-in-flight",
        "8",
        "--backend-queue",
        "100",
        "--backend-secret-file",
        secret.to_str().unwrap(),
    ])
    .unwrap();
    let b = s.backend.unwrap();
    assert!(b.has_hook(Hook::Subscribe) && b.has_hook(Hook::Connect));
    assert!(!b.has_hook(Hook::Publish));
    let debug = format!("{b:?}");
    for part in [
        "webhook: Some(\"http://127.0.0.1:9/events\")",
        "webhook_events: \"disconnect,message\"",
        "nats: None",
        "timeout: 500ms",
        "max_in_flight: 8",
        "queue_capacity: 100",
        "authorization: Some(\"***\")",
    ] {
        assert!(debug.contains(part), "{part}: {debug}");
    }
    // Only the webhook: every event, the bounds' defaults, no secret.
    let b = load(&["--webhook", "http://127.0.0.1:9/"])
        .unwrap()
        .backend
        .unwrap();
    let debug = format!("{b:?}");
    for part in [
        "webhook_events: \"connect,disconnect,message,subscribe,unsubscribe\"",
        "timeout: 2s",
        "max_in_flight: 256",
        "queue_capacity: 10000",
        "authorization: None",
    ] {
        assert!(debug.contains(part), "{part}: {debug}");
    }
    let b = load(&["--hook-publish", "http://127.0.0.1:9/p"])
        .unwrap()
        .backend
        .unwrap();
    assert!(b.has_hook(Hook::Publish) && !b.has_hook(Hook::Subscribe));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nats_events_default_to_the_cluster_and_its_name() {
    let debug = |extra: &[&str]| format!("{:?}", load(extra).unwrap().backend.unwrap());
    let d = debug(&[
        "--nats-events",
        "message",
        "--cluster",
        "nats://127.0.0.1:4222",
    ]);
    assert!(d.contains("url: \"nats://127.0.0.1:4222\""), "{d}");
    assert!(d.contains("subject: \"corecast.events\""), "{d}");
    assert!(d.contains("webhook: None"), "{d}");
    let d = debug(&[
        "--nats-events",
        "all",
        "--cluster",
        "nats://127.0.0.1:4222",
        "--cluster-name",
        "blue",
        "--nats-events-url",
        "nats://10.0.0.1:4222",
    ]);
    assert!(d.contains("url: \"nats://10.0.0.1:4222\""), "{d}");
    assert!(d.contains("subject: \"blue.events\""), "{d}");
    let d = debug(&[
        "--nats-events",
        "connect,disconnect",
        "--nats-events-url",
        "nats://127.0.0.1:1",
        "--nats-events-subject",
        "app.ws",
    ]);
    assert!(d.contains("subject: \"app.ws\""), "{d}");
}

#[test]
fn backend_settings_from_the_file() {
    let mut args = Args::default();
    let text = "webhook = \"http://127.0.0.1:9/events\"\nwebhook-events = [\"message\", \"connect\"]\n\
                nats_events = \"subscribe\"\nnats-events-url = \"nats://127.0.0.1:1\"\n\
                nats-events-subject = \"x.y\"\nhook-connect = \"http://127.0.0.1:9/c\"\n\
                hook-subscribe = \"http://127.0.0.1:9/s\"\nhook-publish = \"http://127.0.0.1:9/p\"\n\
                hook-rpc = \"http://127.0.0.1:9/r\"\nbackend-timeout = 3\n\
                backend-max-in-flight = 4\nbackend-queue = 5\nbackend-secret-file = \"/s\"\n";
    fill_from_file(&mut args, text).unwrap();
    assert_eq!(args.webhook.as_deref(), Some("http://127.0.0.1:9/events"));
    assert_eq!(
        args.webhook_events,
        Some(EventSet::parse("connect,message").unwrap())
    );
    assert_eq!(
        args.nats_events,
        Some(EventSet::parse("subscribe").unwrap())
    );
    assert_eq!(args.nats_events_url.as_deref(), Some("nats://127.0.0.1:1"));
    assert_eq!(args.nats_events_subject.as_deref(), Some("x.y"));
    assert_eq!(args.hook_rpc.as_deref(), Some("http://127.0.0.1:9/r"));
    assert_eq!(args.backend_timeout, Some(Duration::from_secs(3)));
    assert_eq!(args.backend_max_in_flight, Some(4));
    assert_eq!(args.backend_queue, Some(5));
    assert_eq!(args.backend_secret_file, Some(PathBuf::from("/s")));
    args.backend_secret_file = None;
    let b = backend(&args).unwrap().unwrap();
    assert!(Hook::ALL.iter().all(|h| b.has_hook(*h)));
    // A flag wins over the file.
    let mut args = Args::try_parse_from(["corecast", "--backend-timeout", "1s"]).unwrap();
    fill_from_file(&mut args, "backend-timeout = \"9s\"").unwrap();
    assert_eq!(args.backend_timeout, Some(Duration::from_secs(1)));
    let e = fill_from_file(&mut Args::default(), "webhook-events = \"everything\"").unwrap_err();
    assert!(
        e.starts_with("webhook-events: unknown event \"everything\""),
        "{e}"
    );
    let e = fill_from_file(&mut Args::default(), "backend-queue = 0").unwrap_err();
    assert!(e.starts_with("backend-queue: invalid number \"0\""), "{e}");
}

#[test]
fn backend_errors_say_what_is_wrong() {
    let e = load(&["--webhook", "https://example.com/x"]).unwrap_err();
    assert!(
        e.starts_with("--webhook: backend URL \"https://example.com/x\": https is not supported"),
        "{e}"
    );
    let e = load(&["--hook-rpc", "127.0.0.1:9/rpc"]).unwrap_err();
    assert!(e.starts_with("--hook-rpc: backend URL"), "{e}");
    let e = load(&["--hook-subscribe", "http://127.0.0.1:0/"]).unwrap_err();
    assert!(e.contains("bad port"), "{e}");
    let e = load(&["--webhook-events", "message"]).unwrap_err();
    assert_eq!(e, "--webhook-events needs --webhook");
    let e = load(&["--nats-events", "message"]).unwrap_err();
    assert!(
        e.starts_with("--nats-events needs --nats-events-url"),
        "{e}"
    );
    let e = load(&["--nats-events-subject", "a.b"]).unwrap_err();
    assert!(e.contains("need --nats-events"), "{e}");
    let e = load(&[
        "--nats-events",
        "message",
        "--nats-events-url",
        "nats://127.0.0.1:1",
        "--nats-events-subject",
        "a.>",
    ])
    .unwrap_err();
    assert!(
        e.starts_with("--nats-events-subject: invalid NATS subject prefix"),
        "{e}"
    );
    let e = load(&["--backend-timeout", "1s"]).unwrap_err();
    assert!(
        e.contains("need --webhook, --nats-events or a --hook-* URL"),
        "{e}"
    );
    let e = load(&[
        "--hook-rpc",
        "http://127.0.0.1:9/",
        "--backend-secret-file",
        "/nonexistent/s",
    ])
    .unwrap_err();
    assert!(e.starts_with("cannot read /nonexistent/s"), "{e}");
    // Values clap refuses: one line each, naming the flag.
    for (argv, needle) in [
        (&["--webhook-events", "msgs"][..], "unknown event \"msgs\""),
        (&["--nats-events", ","][..], "invalid event list"),
        (&["--backend-timeout", "0"][..], "must be more than 0"),
        (&["--backend-timeout", "soon"][..], "invalid duration"),
        (
            &["--backend-max-in-flight", "0"][..],
            "expected a whole number from 1",
        ),
        (
            &["--backend-queue", "lots"][..],
            "expected a whole number from 1",
        ),
    ] {
        let e = load(argv).unwrap_err();
        assert!(e.contains(needle), "{argv:?}: {e}");
        assert!(e.contains(argv[0]), "{argv:?}: {e}");
        assert_eq!(one_line(&e), e, "{argv:?}");
    }
}

#[test]
fn backend_secret_file_must_be_one_line() {
    let dir = std::env::temp_dir().join(format!("corecast-cli-bsecret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secret");
    for bad in ["", "\n", "two\nlines\n"] {
        std::fs::write(&path, bad).unwrap();
        let e = load(&[
            "--hook-rpc",
            "http://127.0.0.1:9/",
            "--backend-secret-file",
            path.to_str().unwrap(),
        ])
        .unwrap_err();
        assert!(
            e.contains("the secret must be one non-empty line"),
            "{bad:?}: {e}"
        );
    }
    std::fs::write(&path, "ok\r\n").unwrap();
    let s = load(&[
        "--hook-rpc",
        "http://127.0.0.1:9/",
        "--backend-secret-file",
        path.to_str().unwrap(),
    ])
    .unwrap();
    assert!(format!("{:?}", s.backend.unwrap()).contains("authorization: Some(\"***\")"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn backend_from_the_environment() {
    let env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    assert!(load_unlocked(&[]).unwrap().backend.is_none());
    std::env::set_var("CORECAST_HOOK_RPC", "http://127.0.0.1:9/rpc");
    let from_env = load_unlocked(&[]);
    let bad = {
        std::env::set_var("CORECAST_HOOK_RPC", "ftp://127.0.0.1:9/rpc");
        load_unlocked(&[])
    };
    std::env::remove_var("CORECAST_HOOK_RPC");
    drop(env);
    assert!(from_env.unwrap().backend.unwrap().has_hook(Hook::Rpc));
    let e = bad.unwrap_err();
    assert!(
        e.starts_with("--hook-rpc: backend URL \"ftp://127.0.0.1:9/rpc\": not an http:// URL"),
        "{e}"
    );
}

#[test]
fn history_rules_from_flag_environment_and_file() {
    let rule = |pattern: &str, size, ttl| HistoryRule {
        pattern: pattern.into(),
        size,
        ttl,
    };
    let s = load(&["--history", "scores.*=100/60s, chat.lobby=1000/10m"]).unwrap();
    assert_eq!(
        s.history,
        [
            rule("scores.*", 100, Duration::from_secs(60)),
            rule("chat.lobby", 1000, Duration::from_secs(600)),
        ]
    );
    assert!(load(&[]).unwrap().history.is_empty());
    // A bare TTL is seconds; `*` alone is every topic; a name may hold `=`.
    let s = load(&["--history=*=1/30,a=b=2/500ms"]).unwrap();
    assert_eq!(
        s.history,
        [
            rule("*", 1, Duration::from_secs(30)),
            rule("a=b", 2, Duration::from_millis(500)),
        ]
    );
    // The file: a string, or a list of rules.
    let mut args = Args::default();
    fill_from_file(&mut args, "history = [\"t*=5/1m\", \"u=6/2s\"]").unwrap();
    assert_eq!(
        Settings::from_args(args).history,
        [
            rule("t*", 5, Duration::from_secs(60)),
            rule("u", 6, Duration::from_secs(2)),
        ]
    );
    let mut args = Args::try_parse_from(["corecast", "--history", "x=1/1s"]).unwrap();
    fill_from_file(&mut args, "history = \"y=2/2s\"").unwrap();
    assert_eq!(
        Settings::from_args(args).history,
        [rule("x", 1, Duration::from_secs(1))],
        "the flag wins"
    );
    let e = fill_from_file(&mut Args::default(), "history = \"t=0/1s\"").unwrap_err();
    assert!(
        e.starts_with("history: invalid history rule \"t=0/1s\""),
        "{e}"
    );
    // The environment. (Only a valid value: tests that parse flags without the lock
    // would see it.)
    let env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("CORECAST_HISTORY", "news*=10/1h");
    let from_env = load_unlocked(&[]);
    let flag_wins = load_unlocked(&["--history", "x=1/1s"]);
    std::env::remove_var("CORECAST_HISTORY");
    drop(env);
    assert_eq!(
        from_env.unwrap().history,
        [rule("news*", 10, Duration::from_secs(3600))]
    );
    assert_eq!(
        flag_wins.unwrap().history,
        [rule("x", 1, Duration::from_secs(1))]
    );
}

#[test]
fn bad_history_rules_say_what_is_wrong_on_one_line() {
    for (value, needle) in [
        (
            "scores",
            "invalid history rule \"scores\": expected PATTERN=SIZE/TTL, like scores.*=100/60s",
        ),
        (
            "t=100",
            "invalid history rule \"t=100\": expected PATTERN=SIZE/TTL",
        ),
        ("=1/1s", "the pattern is empty"),
        ("a*b=1/1s", "a * may only end the pattern"),
        ("a**=1/1s", "a * may only end the pattern"),
        ("t=0/1s", "SIZE must be a whole number from 1"),
        ("t=-1/1s", "SIZE must be a whole number from 1"),
        ("t=many/1s", "SIZE must be a whole number from 1"),
        ("t=1/soon", "TTL: invalid duration \"soon\""),
        ("t=1/5d", "unknown unit \"d\""),
        ("t=1/0s", "TTL must be more than 0"),
        ("t=1/1s,t=2/2s", "the pattern \"t\" is given twice"),
        (",", "invalid history list \",\": expected PATTERN=SIZE/TTL"),
    ] {
        let e = load(&["--history", value]).unwrap_err();
        assert!(e.contains(needle), "{value:?}: {e}");
        assert!(e.contains("--history"), "{value:?}: {e}");
        assert_eq!(one_line(&e), e, "{value:?}");
    }
    let long = format!("{}=1/1s", "x".repeat(257));
    let e = load(&["--history", &long]).unwrap_err();
    assert!(e.contains("over 256 bytes"), "{e}");
}

#[test]
fn write_coalescing_is_a_bounded_duration() {
    assert_eq!(
        load(&[]).unwrap().write_coalescing,
        corecast::DEFAULT_WRITE_COALESCING
    );
    assert_eq!(
        load(&["--write-coalescing", "0.5ms"])
            .unwrap()
            .write_coalescing,
        Duration::from_micros(500)
    );
    assert_eq!(
        load(&["--write-coalescing", "0"]).unwrap().write_coalescing,
        Duration::ZERO
    );
    let e = load(&["--write-coalescing", "1s"]).unwrap_err();
    assert!(
        e.contains("--write-coalescing") && e.contains("at most 100ms"),
        "{e}"
    );
}

#[test]
fn the_socket_send_buffer_is_a_size() {
    let s = load(&["--socket-send-buffer", "64KiB"]).unwrap();
    assert_eq!(s.socket_send_buffer, Some(64 * 1024));
    assert_eq!(load(&[]).unwrap().socket_send_buffer, None);
    assert_eq!(
        load(&["--socket-send-buffer", "0"])
            .unwrap()
            .socket_send_buffer,
        None
    );
    let e = load(&["--socket-send-buffer", "lots"]).unwrap_err();
    assert!(e.contains("--socket-send-buffer"), "{e}");
}

#[test]
fn slow_consumer_rules_from_flag_environment_and_file() {
    use corecast::SlowConsumerPolicy::{DropOldest, KeepLatest, Teardown};
    let s = load(&[
        "--slow-consumers",
        "prices.*=keep-latest, feed=drop-oldest,x=teardown",
    ]);
    assert_eq!(
        s.unwrap().slow_consumers,
        [
            ("prices.*".to_string(), KeepLatest),
            ("feed".to_string(), DropOldest),
            ("x".to_string(), Teardown),
        ]
    );
    assert!(load(&[]).unwrap().slow_consumers.is_empty());
    let mut args = Args::default();
    fill_from_file(&mut args, "slow-consumers = [\"t*=drop-oldest\"]").unwrap();
    assert_eq!(
        Settings::from_args(args).slow_consumers,
        [("t*".to_string(), DropOldest)]
    );
    let env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("CORECAST_SLOW_CONSUMERS", "news*=keep-latest");
    let from_env = load_unlocked(&[]);
    std::env::remove_var("CORECAST_SLOW_CONSUMERS");
    drop(env);
    assert_eq!(
        from_env.unwrap().slow_consumers,
        [("news*".to_string(), KeepLatest)]
    );
    for (value, needle) in [
        (
            "feed",
            "invalid slow-consumers rule \"feed\": expected PATTERN=POLICY",
        ),
        (
            "feed=sometimes",
            "\"sometimes\" is not a slow-consumer policy: teardown, drop-oldest or keep-latest",
        ),
        ("=drop-oldest", "the pattern is empty"),
        ("a*b=drop-oldest", "a * may only end the pattern"),
        (
            "t=drop-oldest,t=keep-latest",
            "the pattern \"t\" is given twice",
        ),
    ] {
        let e = load(&["--slow-consumers", value]).unwrap_err();
        assert!(e.contains(needle), "{value:?}: {e}");
        assert!(e.contains("--slow-consumers"), "{value:?}: {e}");
        assert_eq!(one_line(&e), e, "{value:?}");
    }
}

#[test]
fn help_lists_the_backend_flags_with_their_defaults() {
    use clap::CommandFactory;
    let help = Args::command().render_help().to_string();
    for (flag, default) in [
        ("--webhook <URL>", "[default: none]"),
        ("--webhook-events <LIST>", "[default: all]"),
        ("--nats-events <LIST>", "[default: none]"),
        ("--nats-events-url <URL>", "[default: the --cluster URL]"),
        ("--nats-events-subject <PREFIX>", "corecast.events]"),
        ("--hook-connect <URL>", "[default: none]"),
        ("--hook-subscribe <URL>", "[default: none]"),
        ("--hook-publish <URL>", "[default: none]"),
        ("--hook-rpc <URL>", "[default: none]"),
        ("--backend-timeout <DURATION>", "[default: 2s]"),
        ("--backend-max-in-flight <N>", "[default: 256]"),
        ("--backend-queue <N>", "[default: 10000]"),
        ("--backend-secret-file <FILE>", "[default: none]"),
        ("--history <LIST>", "[default: none]"),
        ("--slow-consumers <LIST>", "[default: teardown"),
    ] {
        let at = help.find(flag).unwrap_or_else(|| panic!("{flag}: {help}"));
        let entry = &help[at..];
        let end = entry[2..].find("\n  -").map_or(entry.len(), |e| e + 2);
        assert!(entry[..end].contains(default), "{flag}: {}", &entry[..end]);
    }
}

#[test]
fn keepalive_defaults_are_for_fan_out_and_a_set_interval_brings_its_idle_timeout() {
    let s = Settings::from_args(Args::default());
    let c = s.config.clone().effective();
    assert_eq!(c.ping_interval, Duration::from_secs(25));
    assert_eq!(
        c.read_idle_timeout,
        Duration::from_secs(75),
        "3 pings missed"
    );
    let a = Args::try_parse_from(["corecast", "--ping-interval", "1s"]).unwrap();
    let c = Settings::from_args(a).config.effective();
    assert_eq!(c.ping_interval, Duration::from_secs(1), "the Go helper's");
    assert_eq!(c.read_idle_timeout, Duration::from_secs(3));
    let a = Args::try_parse_from(["corecast", "--read-idle-timeout", "120s"]).unwrap();
    let c = Settings::from_args(a).config.effective();
    assert_eq!(c.read_idle_timeout, Duration::from_secs(120));
}
