//! Unit tests of token verification and the topic rules: tokens forged here, of every kind,
//! with keys made here (EC, Ed25519) or kept in `tests/keys/` (RSA, which rcgen cannot make).

use base64::Engine as _;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use super::*;

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"a secret of some length, for tests";
const RSA_PRIVATE: &[u8] = include_bytes!("../tests/keys/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../tests/keys/rsa_public.pem");

fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

fn hs256(claims: serde_json::Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), &claims)
}

fn hmac() -> Verifier {
    Verifier::hmac(SECRET).unwrap()
}

fn alice() -> serde_json::Value {
    json!({ "sub": "alice", "exp": NOW + 60, "subscribe": ["scores.*"], "publish": ["chat"] })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn a_good_token_gives_its_identity() {
    let id = hmac().verify(&hs256(alice()), NOW).unwrap();
    assert_eq!(
        id,
        Identity {
            user: "alice".into(),
            expires: Some(NOW + 60),
            subscribe: vec!["scores.*".into()],
            publish: vec!["chat".into()],
        }
    );
    // HS384 and HS512 too; no exp, no grants.
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let t = sign(alg, &EncodingKey::from_secret(SECRET), &json!({"sub": "b"}));
        let id = hmac().verify(&t, NOW).unwrap();
        assert_eq!((id.user.as_str(), id.expires), ("b", None));
        assert!(id.subscribe.is_empty() && id.publish.is_empty());
    }
}

#[test]
fn a_bad_signature_is_refused() {
    let other = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret"),
        &alice(),
    );
    assert_eq!(hmac().verify(&other, NOW), Err(AuthRefusal::BadSignature));
    // A good token with its claims changed.
    let good = hs256(alice());
    let parts: Vec<&str> = good.split('.').collect();
    let claims = b64(json!({"sub": "mallory", "exp": NOW + 60})
        .to_string()
        .as_bytes());
    let tampered = format!("{}.{claims}.{}", parts[0], parts[2]);
    assert_eq!(
        hmac().verify(&tampered, NOW),
        Err(AuthRefusal::BadSignature)
    );
}

#[test]
fn alg_none_is_refused() {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64(alice().to_string().as_bytes());
    for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
        let refusal = hmac().verify(&token, NOW).unwrap_err();
        assert!(
            matches!(
                refusal,
                AuthRefusal::WrongAlgorithm | AuthRefusal::Malformed
            ),
            "{refusal:?}"
        );
    }
    let rsa = Verifier::public_key_pem(RSA_PUBLIC).unwrap();
    let token = format!("{header}.{claims}.");
    assert_eq!(rsa.verify(&token, NOW), Err(AuthRefusal::WrongAlgorithm));
}

#[test]
fn rsa_tokens_verify_and_key_confusion_is_refused() {
    let rsa = Verifier::public_key_pem(RSA_PUBLIC).unwrap();
    assert_eq!(rsa.algorithms(), ["RS256", "RS384", "RS512"]);
    let private = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    for alg in [Algorithm::RS256, Algorithm::RS512] {
        assert_eq!(
            rsa.verify(&sign(alg, &private, &alice()), NOW)
                .unwrap()
                .user,
            "alice"
        );
    }
    // HS256 "signed" with the public key's bytes, as if the server took the PEM as an HMAC
    // secret: the key is RSA, so HMAC is not an algorithm it takes.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC),
        &alice(),
    );
    assert_eq!(rsa.verify(&confused, NOW), Err(AuthRefusal::WrongAlgorithm));
    // And the other way round: an RS256 token against an HMAC verifier.
    let rs = sign(Algorithm::RS256, &private, &alice());
    assert_eq!(hmac().verify(&rs, NOW), Err(AuthRefusal::WrongAlgorithm));
}

#[test]
fn ec_and_ed25519_keys_verify_their_tokens_only() {
    for (alg, kind) in [
        (Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256),
        (Algorithm::EdDSA, &rcgen::PKCS_ED25519),
    ] {
        let pair = rcgen::KeyPair::generate_for(kind).unwrap();
        let verifier = Verifier::public_key_pem(pair.public_key_pem().as_bytes()).unwrap();
        assert_eq!(verifier.algorithms(), [format!("{alg:?}")]);
        let private = pair.serialize_pem();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()),
            _ => EncodingKey::from_ed_pem(private.as_bytes()),
        }
        .unwrap();
        let token = sign(alg, &key, &alice());
        assert_eq!(verifier.verify(&token, NOW).unwrap().user, "alice");
        // Another key pair of the same kind: a bad signature.
        let other = rcgen::KeyPair::generate_for(kind).unwrap();
        let other = Verifier::public_key_pem(other.public_key_pem().as_bytes()).unwrap();
        assert_eq!(other.verify(&token, NOW), Err(AuthRefusal::BadSignature));
        // HMAC with the public key's bytes.
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(pair.public_key_pem().as_bytes()),
            &alice(),
        );
        assert_eq!(
            verifier.verify(&confused, NOW),
            Err(AuthRefusal::WrongAlgorithm)
        );
    }
}

#[test]
fn keys_that_are_not_keys_are_errors() {
    assert!(Verifier::hmac(b"").is_err());
    assert!(Verifier::public_key_pem(b"not a key").is_err());
    // A private key is not a public key.
    assert!(Verifier::public_key_pem(RSA_PRIVATE).is_err());
}

#[test]
fn time_claims_follow_now_and_the_leeway() {
    let at = |exp: u64, nbf: u64| hs256(json!({"sub": "a", "exp": exp, "nbf": nbf}));
    let v = hmac();
    assert!(v.verify(&at(NOW + 10, NOW - 10), NOW).is_ok());
    // Within the default leeway of 5 s either side.
    assert!(v.verify(&at(NOW - 5, NOW + 5), NOW).is_ok());
    assert_eq!(v.verify(&at(NOW - 6, NOW), NOW), Err(AuthRefusal::Expired));
    assert_eq!(
        v.verify(&at(NOW + 60, NOW + 6), NOW),
        Err(AuthRefusal::NotYetValid)
    );
    // The same tokens, a minute later and earlier: `now` is the caller's.
    assert_eq!(
        v.verify(&at(NOW + 10, NOW - 10), NOW + 60),
        Err(AuthRefusal::Expired)
    );
    assert_eq!(
        v.verify(&at(NOW + 10, NOW - 10), NOW - 60),
        Err(AuthRefusal::NotYetValid)
    );
    let strict = hmac().leeway(Duration::ZERO);
    assert_eq!(
        strict.verify(&at(NOW - 1, NOW), NOW),
        Err(AuthRefusal::Expired)
    );
    let loose = hmac().leeway(Duration::from_secs(120));
    assert!(loose.verify(&at(NOW - 100, NOW + 100), NOW).is_ok());
}

#[test]
fn audience_and_issuer() {
    let v = hmac().audience("corecast").issuer("https://id.example");
    let with = |aud: &str, iss: &str| hs256(json!({"sub": "a", "aud": aud, "iss": iss}));
    assert!(v
        .verify(&with("corecast", "https://id.example"), NOW)
        .is_ok());
    let list =
        hs256(json!({"sub": "a", "aud": ["other", "corecast"], "iss": "https://id.example"}));
    assert!(v.verify(&list, NOW).is_ok());
    assert_eq!(
        v.verify(&with("other", "https://id.example"), NOW),
        Err(AuthRefusal::WrongAudience)
    );
    assert_eq!(
        v.verify(&with("corecast", "https://evil.example"), NOW),
        Err(AuthRefusal::WrongIssuer)
    );
    // Missing when required.
    let bare = hs256(json!({"sub": "a", "iss": "https://id.example"}));
    assert_eq!(v.verify(&bare, NOW), Err(AuthRefusal::WrongAudience));
    let bare = hs256(json!({"sub": "a", "aud": "corecast"}));
    assert_eq!(v.verify(&bare, NOW), Err(AuthRefusal::WrongIssuer));
    // A token for some audience, at a server that requires none.
    assert_eq!(
        hmac().verify(&with("elsewhere", "x"), NOW),
        Err(AuthRefusal::WrongAudience)
    );
}

#[test]
fn malformed_tokens_and_missing_sub() {
    for token in ["", "abc", "a.b.c", "a.b", "....", "\u{1f600}.x.y"] {
        assert_eq!(
            hmac().verify(token, NOW),
            Err(AuthRefusal::Malformed),
            "{token:?}"
        );
    }
    for claims in [
        json!({"exp": NOW + 60}),
        json!({"sub": ""}),
        json!({"sub": 7}),
        json!({"sub": "a", "exp": "tomorrow"}),
        json!({"sub": "a", "subscribe": "scores.*"}),
    ] {
        assert_eq!(
            hmac().verify(&hs256(claims.clone()), NOW),
            Err(AuthRefusal::Malformed),
            "{claims}"
        );
    }
}

#[test]
fn causes_have_labels_and_reasons() {
    for (i, c) in AuthRefusal::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i);
        assert!(!c.label().is_empty() && !c.reason().is_empty());
    }
    assert_eq!(AuthRefusal::BadSignature.label(), "bad_signature");
}

#[test]
fn patterns() {
    assert!(pattern_matches("scores.*", "scores.nba"));
    assert!(pattern_matches("scores.*", "scores."));
    assert!(!pattern_matches("scores.*", "scores"));
    assert!(!pattern_matches("scores.*", "news.scores.nba"));
    assert!(pattern_matches("*", "anything#at,all"));
    assert!(pattern_matches("chat", "chat"));
    assert!(!pattern_matches("chat", "chat.room"));
    assert!(!pattern_matches("chat", "cha"));
}

#[test]
fn user_limited_topics() {
    let users = |t| topic_users(t).map(|u| u.collect::<Vec<_>>());
    assert_eq!(users("inbox#alice"), Some(vec!["alice"]));
    assert_eq!(users("dialog#alice,bob"), Some(vec!["alice", "bob"]));
    assert_eq!(users("a#b#carol"), Some(vec!["carol"]));
    assert_eq!(users("room#"), Some(vec![]));
    assert_eq!(users("scores.nba"), None);

    let id = |user: &str, subscribe: &[&str]| Identity {
        user: user.into(),
        expires: None,
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        publish: vec!["dialog#*".into()],
    };
    let alice = id("alice", &[]);
    let mallory = id("mallory", &["*"]);
    assert!(alice.may_subscribe("inbox#alice"));
    assert!(alice.may_subscribe("dialog#alice,bob"));
    assert!(!alice.may_subscribe("inbox#bob"));
    // Whatever the grants: `*` does not open another user's topic.
    assert!(!mallory.may_subscribe("inbox#alice"));
    assert!(!mallory.may_subscribe("room#"));
    assert!(mallory.may_subscribe("scores.nba"));
    assert!(!alice.may_subscribe("scores.nba"));
    // Publishing follows the publish grants only.
    assert!(mallory.may_publish("dialog#alice,bob"));
    assert!(!mallory.may_publish("inbox#alice"));
}

#[test]
fn tokens_come_from_the_header_a_subprotocol_or_the_query() {
    let none: [&str; 0] = [];
    assert_eq!(token_from(Some("Bearer abc"), none, None), Some("abc"));
    assert_eq!(token_from(Some("bearer  abc "), none, None), Some("abc"));
    assert_eq!(token_from(Some("BEARER abc"), none, Some("q")), Some("abc"));
    assert_eq!(token_from(Some("Basic abc"), none, Some("q")), Some("q"));
    assert_eq!(token_from(Some("Bearer "), none, None), None);
    assert_eq!(token_from(None, none, Some("q")), Some("q"));
    assert_eq!(token_from(None, none, Some("")), None);
    assert_eq!(token_from(None, none, None), None);
    // The header first, then a subprotocol, then the query.
    let carried = ["corecast", "corecast.token.p.q.r"];
    assert_eq!(token_from(None, carried, Some("q")), Some("p.q.r"));
    assert_eq!(token_from(Some("Bearer h"), carried, None), Some("h"));
    assert_eq!(
        token_from(None, ["chat", "corecast.token."], Some("q")),
        Some("q")
    );
    assert_eq!(token_from(None, ["corecast.tokens.x"], None), None);
}

#[test]
fn a_live_token_is_valid_until_exp_then_has_the_grace_then_is_over() {
    // exp at 1000, a grace of 30 s.
    assert_eq!(expiry(0, Some(1000), 30), Expiry::Valid { until: 1000 });
    assert_eq!(expiry(999, Some(1000), 30), Expiry::Valid { until: 1000 });
    // From exp on: told, with until exp + grace to refresh.
    assert_eq!(expiry(1000, Some(1000), 30), Expiry::Grace { until: 1030 });
    assert_eq!(expiry(1029, Some(1000), 30), Expiry::Grace { until: 1030 });
    assert_eq!(expiry(1030, Some(1000), 30), Expiry::Over);
    assert_eq!(expiry(5000, Some(1000), 30), Expiry::Over);
    // No grace: over at exp.
    assert_eq!(expiry(999, Some(1000), 0), Expiry::Valid { until: 1000 });
    assert_eq!(expiry(1000, Some(1000), 0), Expiry::Over);
    // No exp: nothing to enforce, ever.
    assert_eq!(expiry(u64::MAX, None, 30), Expiry::Never);
    // An exp at the end of time does not overflow.
    assert_eq!(
        expiry(u64::MAX - 1, Some(u64::MAX - 1), 30),
        Expiry::Grace { until: u64::MAX }
    );
}

#[test]
fn the_refresh_grace_is_the_verifiers() {
    assert_eq!(hmac().grace(), DEFAULT_REFRESH_GRACE.as_secs());
    let v = hmac().refresh_grace(Duration::from_secs(7));
    assert_eq!(v.grace(), 7);
    assert!(format!("{v:?}").contains("refresh_grace: 7"));
}

#[test]
fn claims_are_refused_before_the_signature_is_checked() {
    // Forged with another key: the signature is bad, but the claims already refuse it, so the
    // refusal names them and no signature check was paid for.
    let forged = |claims: serde_json::Value| {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"not the key"),
            &claims,
        )
    };
    let v = hmac().audience("app").issuer("issuer");
    let ok = json!({ "sub": "a", "aud": ["x", "app"], "iss": "issuer" });
    assert_eq!(
        v.verify(&forged(ok.clone()), NOW),
        Err(AuthRefusal::BadSignature)
    );
    let cases = [
        (
            json!({ "sub": "a", "aud": "app", "iss": "issuer", "exp": NOW - 3600 }),
            AuthRefusal::Expired,
        ),
        (
            json!({ "sub": "a", "aud": "app", "iss": "issuer", "nbf": NOW + 3600 }),
            AuthRefusal::NotYetValid,
        ),
        (
            json!({ "sub": "a", "aud": "other", "iss": "issuer" }),
            AuthRefusal::WrongAudience,
        ),
        (
            json!({ "sub": "a", "iss": "issuer" }),
            AuthRefusal::WrongAudience,
        ),
        (
            json!({ "sub": "a", "aud": "app", "iss": "else" }),
            AuthRefusal::WrongIssuer,
        ),
        (
            json!({ "sub": "", "aud": "app", "iss": "issuer" }),
            AuthRefusal::Malformed,
        ),
    ];
    for (claims, refusal) in cases {
        assert_eq!(
            v.verify(&forged(claims.clone()), NOW),
            Err(refusal),
            "{claims}"
        );
    }
    // An EC verifier refuses an HMAC token by its header alone.
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec = Verifier::public_key_pem(pair.public_key_pem().as_bytes()).unwrap();
    assert_eq!(
        ec.verify(&hs256(alice()), NOW),
        Err(AuthRefusal::WrongAlgorithm)
    );
    // Valid claims and a good signature still pass.
    assert!(v.verify(&hs256(ok), NOW).is_ok());
}

#[test]
fn refusals_per_address_run_out_and_come_back_at_the_rate() {
    use std::net::IpAddr;
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let mut limit = RefusalLimit::new(2);
    assert!(!limit.exhausted(a, t0));
    limit.refused(a, t0);
    assert!(!limit.exhausted(a, t0));
    limit.refused(a, t0);
    assert!(limit.exhausted(a, t0), "two refusals a second, both used");
    assert!(!limit.exhausted(b, t0), "per address");
    // 2 a second: one back after half a second.
    assert!(limit.exhausted(a, t0 + Duration::from_millis(499)));
    assert!(!limit.exhausted(a, t0 + Duration::from_millis(500)));
    // The table stays bounded: a flood of addresses forgets the refilled ones.
    for i in 0..5000u32 {
        let ip = IpAddr::from(i.to_be_bytes());
        limit.refused(ip, t0 + Duration::from_secs(10));
    }
    assert!(limit.buckets.len() <= MAX_ADDRESSES);
}
