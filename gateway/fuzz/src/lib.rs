//! The checks behind the gateway's fuzz targets, one function per target, written once.
//!
//! Each `fuzz_targets/<name>.rs` hands libFuzzer's input to the function of the same name here;
//! `gateway/tests/fuzz_seeds.rs` includes this file (`#[path]`) and replays every committed input
//! (`seeds/<name>/`, `regressions/<name>/`) through the same function on stable, so the corpus
//! kept in the repository is a regression test of the normal suite. A check returns normally or
//! panics; a panic is a finding.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use gateway::admission::Admission;
use gateway::auth::{Action, AuthError, Authenticator, Principal};
use gateway::config::{AuthConfig, Config, KeyAlg, KeyConfig};
use gateway::namespaces::Namespaces;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value};

/// A target's check: returns, or panics on a finding.
pub type Check = fn(&[u8]);

/// Every target: its name (the fuzz binary and the seed directory) and its check.
pub const TARGETS: &[(&str, Check)] = &[("config", config), ("jwt", jwt)];

/// The configuration file: text up to the first NUL byte is the TOML file; each `NAME=value`
/// line after it is an environment variable. Loading never panics; a configuration that loads
/// prints (as `check-config` prints it, secrets redacted) to TOML that loads and prints the
/// same again, and the namespaces and admission limits built from it at start-up
/// find every configured namespace.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env) = text.split_once('\0').unwrap_or((text, ""));
    let env = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()));
    let Ok(config) = Config::from_toml(file, "fuzz input", env) else {
        return;
    };
    // Secrets print as `<redacted>` (gateway::secret), so the printed form is checked to load
    // and to print the same again, rather than to load back to the same secrets.
    let printed = toml::to_string_pretty(&config).expect("a loaded configuration prints");
    match Config::from_toml(&printed, "printed", []) {
        Ok(again) => {
            let reprinted = toml::to_string_pretty(&again).expect("it prints again");
            assert_eq!(reprinted, printed, "printed:\n{printed}");
        }
        Err(e) => panic!("the printed configuration does not load: {e}\n{printed}"),
    }
    let namespaces = Namespaces::from_config(&config);
    assert_eq!(namespaces.len(), 1 + config.namespaces.len());
    for (name, policy) in &config.namespaces {
        let found = namespaces.of(&format!("{name}.room"));
        assert_eq!(found.map(|ns| &ns.policy), Ok(policy), "namespace {name}");
    }
    Admission::new(&config.limits);
}

/// The HS256 secret of the `hs` key.
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-fuzz";

/// A user every token is refused for.
const DENIED_USER: &str = "mallory";

/// JWT handling: the input as a token (as the handshake passes it) and as a request head whose
/// token is found (`Authorization`, a `ringcast.token.` subprotocol entry or `?token=`), then,
/// when it holds a NUL byte, as a header and claims (split there) signed with the HS256 secret.
/// Verification never panics and answers 401 or 403; a verified token has a non-empty, not denied `sub` (the one of
/// its claims, when we signed it) whose own `chat.{user}` room it may subscribe to; a token we
/// signed with the HS256 secret verifies only under HS256, never once its signature is changed,
/// and no refusal's message repeats it.
pub fn jwt(data: &[u8]) {
    let auth = authenticator();
    if let Ok(token) = std::str::from_utf8(data) {
        check_verdict(auth.verify(token));
    }
    if let Ok(Some(request)) = proto_codec::http::parse_request(data) {
        check_verdict(auth.authenticate(&request));
    }
    let Some(split) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let (header, claims) = (&data[..split], &data[split + 1..]);
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET);
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        .expect("HS256 signs anything");
    let token = format!("{message}.{signature}");
    let verdict = auth.verify(&token);
    match &verdict {
        Ok(principal) => {
            let header = jsonwebtoken::decode_header(&token).expect("a verified header decodes");
            assert_eq!(header.alg, Algorithm::HS256);
            let claims: Map<String, Value> =
                serde_json::from_slice(claims).expect("verified claims are JSON");
            assert_eq!(
                principal.user.as_deref(),
                claims.get("sub").and_then(Value::as_str)
            );
        }
        Err(e) => assert!(!e.to_string().contains(&token), "{e} repeats the token"),
    }
    check_verdict(verdict);
    // The signature's first character carries its first six bits: changing it changes them.
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{message}.{first}{}", &signature[1..]);
    assert!(auth.verify(&forged).is_err(), "a forged signature verified");
}

/// What holds for any verdict.
fn check_verdict(verdict: Result<Principal, AuthError>) {
    match verdict {
        Ok(principal) => {
            let user = principal
                .user
                .as_deref()
                .expect("a verified token has a user");
            assert!(!user.is_empty() && user != DENIED_USER, "user {user:?}");
            let room = format!("chat.{user}");
            if proto_codec::protocol::validate_room(&room).is_ok() {
                let ns = namespaces()
                    .of(&room)
                    .expect("the default namespace is open");
                assert_eq!(principal.authorize(Action::Subscribe, &room, ns), Ok(()));
            }
        }
        Err(e) => assert!(matches!(e.status(), 401 | 403), "{e}"),
    }
}

/// Keys of all three algorithms (`hs`, `rs`, `es`; the public keys are the test fixtures'),
/// `exp` optional (so that signed inputs reach the claims), `chat.{user}` granted to everyone and
/// one denied user.
fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let key = |kid: &str, alg: KeyAlg, public_key_file: Option<PathBuf>| KeyConfig {
            kid: kid.into(),
            alg,
            secret: if alg == KeyAlg::HS256 {
                String::from_utf8_lossy(SECRET).into_owned().into()
            } else {
                Default::default()
            },
            secret_file: None,
            public_key_file,
        };
        let fixtures = fixtures();
        let config = AuthConfig {
            keys: vec![
                key("hs", KeyAlg::HS256, None),
                key("rs", KeyAlg::RS256, Some(fixtures.join("jwt-rs256.pub"))),
                key("es", KeyAlg::ES256, Some(fixtures.join("jwt-es256.pub"))),
            ],
            require_exp: false,
            subscribe: vec!["chat.{user}".into()],
            deny_users: vec![DENIED_USER.into()],
            ..AuthConfig::default()
        };
        Authenticator::new(&config, false).expect("the fuzz keys load")
    })
}

/// The default namespaces (tokens needed everywhere).
fn namespaces() -> &'static Namespaces {
    static NAMESPACES: OnceLock<Namespaces> = OnceLock::new();
    NAMESPACES.get_or_init(|| Namespaces::from_config(&Config::default()))
}

/// `gateway/tests/fixtures`, from the gateway's tests or from the fuzz crate inside `gateway/`.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("tests/fixtures"))
        .find(|dir| dir.is_dir())
        .expect("gateway/tests/fixtures exists")
}
