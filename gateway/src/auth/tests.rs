use std::path::PathBuf;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::config::{Config, KeyConfig, NamespacePolicy};
use crate::namespaces::Namespaces;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn config() -> AuthConfig {
    AuthConfig {
        keys: vec![
            KeyConfig {
                kid: "hs".into(),
                alg: KeyAlg::HS256,
                secret: SECRET.into(),
                secret_file: None,
                public_key_file: None,
            },
            KeyConfig {
                kid: "rs".into(),
                alg: KeyAlg::RS256,
                secret: Default::default(),
                secret_file: None,
                public_key_file: Some(fixture("jwt-rs256.pub")),
            },
            KeyConfig {
                kid: "es".into(),
                alg: KeyAlg::ES256,
                secret: Default::default(),
                secret_file: None,
                public_key_file: Some(fixture("jwt-es256.pub")),
            },
        ],
        subscribe: vec!["chat.{user}".into()],
        ..AuthConfig::default()
    }
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rs256.key")).unwrap()).unwrap()
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(&std::fs::read(fixture("jwt-es256.key")).unwrap()).unwrap()
        }
        _ => unreachable!(),
    };
    encode(&header, &claims, &key).unwrap()
}

fn ns(policy: NamespacePolicy) -> Namespace {
    let c = Config {
        rooms: policy,
        ..Config::default()
    };
    Namespaces::from_config(&c).of("x").unwrap().clone()
}

#[test]
fn all_three_algorithms_by_kid() {
    let auth = Authenticator::new(&config(), false).unwrap();
    let claims = json!({"sub": "alice", "exp": now() + 60, "ringcast": {"publish": ["prices.*"]}});
    for (alg, kid) in [
        (Algorithm::HS256, "hs"),
        (Algorithm::RS256, "rs"),
        (Algorithm::ES256, "es"),
    ] {
        let p = auth.verify(&sign(alg, Some(kid), claims.clone())).unwrap();
        assert_eq!(p.user.as_deref(), Some("alice"), "{alg:?}");
        assert_eq!(
            p.expires_at,
            Some(now() + 60)
                .filter(|_| true)
                .map(|_| p.expires_at.unwrap())
        );
        let open = ns(NamespacePolicy::default());
        assert!(p.authorize(Action::Subscribe, "chat.alice", &open).is_ok());
        assert_eq!(
            p.authorize(Action::Subscribe, "chat.bob", &open)
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        assert!(p.authorize(Action::Publish, "prices.BTC", &open).is_ok());
        assert!(p.authorize(Action::Publish, "chat.alice", &open).is_err());
    }
    // A single key of an algorithm is found without a kid.
    assert!(auth
        .verify(&sign(Algorithm::RS256, None, claims.clone()))
        .is_ok());
    // A key is bound to its algorithm: an RS256 token naming the HS256 key is refused.
    assert!(matches!(
        auth.verify(&sign(Algorithm::RS256, Some("hs"), claims.clone())),
        Err(AuthError::UnknownKey(_))
    ));
}

#[test]
fn bad_tokens_are_refused_with_reasons() {
    let mut c = config();
    c.audience = vec!["dash".into()];
    c.issuer = vec!["https://auth.example".into()];
    c.leeway_s = 5;
    c.deny_users = vec!["mallory".into()];
    let auth = Authenticator::new(&c, false).unwrap();
    let good =
        json!({"sub": "alice", "exp": now() + 60, "aud": "dash", "iss": "https://auth.example"});
    assert!(auth
        .verify(&sign(Algorithm::HS256, Some("hs"), good.clone()))
        .is_ok());
    let with = |k: &str, v: serde_json::Value| {
        let mut g = good.clone();
        g[k] = v;
        sign(Algorithm::HS256, Some("hs"), g)
    };
    let without = |k: &str| {
        let mut g = good.clone();
        g.as_object_mut().unwrap().remove(k);
        sign(Algorithm::HS256, Some("hs"), g)
    };
    let cases: Vec<(String, &str)> = vec![
        (with("exp", json!(now() - 60)), "xpired"),
        // Within the leeway, an expired token still passes (checked below).
        (with("nbf", json!(now() + 600)), "Immature"),
        (with("aud", json!("other")), "Audience"),
        (with("iss", json!("https://evil.example")), "Issuer"),
        (without("exp"), "exp"),
        (without("sub"), "sub"),
        (with("sub", json!(42)), "sub"),
        (with("ringcast", json!(["x"])), "must be an object"),
        (with("ringcast", json!({"subscribe": "x"})), "array"),
        (with("ringcast", json!({"admin": ["x"]})), "admin"),
        (
            with("ringcast", json!({"subscribe": ["bad room"]})),
            "pattern",
        ),
        ("not-a-jwt".into(), "malformed"),
        (
            format!("{}x", sign(Algorithm::HS256, Some("hs"), good.clone())),
            "invalid",
        ),
        (sign(Algorithm::HS256, Some("nope"), good.clone()), "no key"),
    ];
    for (token, why) in cases {
        let e = auth.verify(&token).unwrap_err();
        assert_eq!(e.status(), 401, "{e}");
        assert!(
            e.to_string().to_lowercase().contains(&why.to_lowercase()),
            "expected {why:?} in {e}"
        );
        assert!(
            !e.to_string().contains(&token),
            "a reason must not echo the token"
        );
    }
    assert!(auth
        .verify(&with("exp", json!(now() - 2)))
        .is_ok_and(|p| p.user.as_deref() == Some("alice")));
    // Finding 8 of issue 19: fractional NumericDates are floored and checked, never ignored;
    // anything but a number is refused.
    let t = now() as f64;
    for (claim, value) in [
        ("exp", json!(t - 60.5)),
        ("nbf", json!(t + 600.5)),
        ("exp", json!("soon")),
        ("nbf", json!(true)),
        ("exp", json!(-1.5)),
    ] {
        let e = auth.verify(&with(claim, value.clone())).unwrap_err();
        assert_eq!(e.status(), 401, "{claim}={value}: {e}");
    }
    let p = auth.verify(&with("exp", json!(t + 60.75))).unwrap();
    assert_eq!(p.expires_at, Some(now() + 60));
    assert!(
        auth.verify(&with("nbf", json!(t + 2.5))).is_ok(),
        "within the leeway"
    );
    let denied = auth.verify(&with("sub", json!("mallory"))).unwrap_err();
    assert_eq!((denied.status(), denied), (403, AuthError::Denied));
    // `alg: none` never passes.
    let none = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(good.to_string().as_bytes())
    );
    assert_eq!(auth.verify(&none).unwrap_err().status(), 401);
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[test]
fn anonymous_and_namespace_rules() {
    let auth = Authenticator::new(&AuthConfig::default(), true).unwrap();
    let anon = Principal::anonymous();
    let closed = ns(NamespacePolicy::default());
    let read = ns(NamespacePolicy {
        anonymous: Access::Subscribe,
        ..NamespacePolicy::default()
    });
    let server_only = ns(NamespacePolicy {
        anonymous: Access::Publish,
        publish: Publishers::Server,
        ..NamespacePolicy::default()
    });
    assert_eq!(
        anon.authorize(Action::Subscribe, "x.a", &closed)
            .unwrap_err()
            .code,
        ErrorCode::Unauthorized
    );
    assert!(anon.authorize(Action::Subscribe, "x.a", &read).is_ok());
    assert!(anon.authorize(Action::Presence, "x.a", &read).is_ok());
    assert_eq!(
        anon.authorize(Action::Publish, "x.a", &read)
            .unwrap_err()
            .code,
        ErrorCode::Unauthorized
    );
    assert_eq!(
        anon.authorize(Action::Publish, "x.a", &server_only)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    // A token sent to a server without keys is refused, never downgraded to anonymous.
    assert_eq!(auth.verify("a.b.c"), Err(AuthError::NoKeys));
}

#[test]
fn token_places_in_order() {
    let head = |extra: &str| format!("GET /ws?token=from-query HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    let get = |h: String| {
        let req = proto_codec::http::parse_request(h.as_bytes())
            .unwrap()
            .unwrap();
        token_of(&req).map(|c| c.into_owned())
    };
    assert_eq!(
        get(head("Authorization: Bearer from-header\r\nSec-WebSocket-Protocol: ringcast.v1, ringcast.token.from-proto\r\n")),
        Some("from-header".into())
    );
    assert_eq!(
        get(head(
            "Sec-WebSocket-Protocol: ringcast.v1, ringcast.token.from-proto\r\n"
        )),
        Some("from-proto".into())
    );
    assert_eq!(get(head("")), Some("from-query".into()));
    assert_eq!(get("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".into()), None);
}

#[test]
fn config_errors_name_the_key() {
    let mut c = config();
    c.keys[0].secret = "short".into();
    let e = Authenticator::new(&c, false).unwrap_err().to_string();
    assert!(e.contains("`hs`") && e.contains("32 bytes"), "{e}");
    let mut c = config();
    c.keys[1].public_key_file = Some(fixture("missing.pub"));
    let e = Authenticator::new(&c, false).unwrap_err().to_string();
    assert!(e.contains("`rs`") && e.contains("missing.pub"), "{e}");
    let mut c = config();
    c.keys[2].public_key_file = Some(fixture("jwt-rs256.pub"));
    assert!(
        Authenticator::new(&c, false).is_err(),
        "an RSA key is not an EC key"
    );
    let mut c = config();
    c.publish = vec!["a b".into()];
    assert!(Authenticator::new(&c, false).is_err());
}
