//! The checks behind the gateway's fuzz targets, one function per target, written once.
//!
//! Each `fuzz_targets/<name>.rs` hands libFuzzer's input to the function of the same name here;
//! `gateway/tests/fuzz_seeds.rs` includes this file (`#[path]`) and replays every committed input
//! (`seeds/<name>/`, `regressions/<name>/`) through the same function on stable, so the corpus
//! kept in the repository is a regression test of the normal suite. A check returns normally or
//! panics; a panic is a finding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use gateway::admission::{Admission, Verdict};
use gateway::auth::{Action, AuthError, Authenticator, Principal};
use gateway::config::{Access, AuthConfig, Config, KeyAlg, KeyConfig, PusherApp};
use gateway::connection::gate::Gate;
use gateway::http::public::{stream_request, HttpDecision, StreamRoom};
use gateway::namespaces::Namespaces;
use gateway::pusher::api::{parse_batch_events, parse_events, EventItems, Route};
use gateway::rooms::crdt::{decode_client_message, AwarenessLimits, CrdtError, CrdtRoom};
use jsonwebtoken::{Algorithm, EncodingKey};
use proto_codec::protocol::validate_room;
use proto_codec::pusher::StoredEvent;
use serde_json::{Map, Value};
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::{AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, Map as _, ReadTxn, StateVector, Text as _, Transact};

/// A target's check: returns, or panics on a finding.
pub type Check = fn(&[u8]);

/// Every target: its name (the fuzz binary and the seed directory) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("config", config),
    ("jwt", jwt),
    ("yrs_update", yrs_update),
    ("awareness", awareness),
    ("pusher_api", pusher_api),
    ("stream_query", stream_query),
    ("node_live", node_live),
];

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

/// Under libFuzzer, lets `gateway::contain` catch the panics it is there to catch: libfuzzer-sys
/// installs a panic hook that aborts on every panic, a caught one too, and
/// `gateway::contain::install_hook` wraps it in the server's own (abort only outside `contain`).
/// The fuzz build unwinds (cargo fuzz does not pass `-Cpanic=abort`, and the fuzz crate's release
/// profile unwinds, `scripts/fuzz.sh`), so `catch_unwind` works there. Not on stable: the replay
/// test keeps the default hook (and catches each check's panic itself).
#[allow(unexpected_cfgs)]
fn contained_panics_allowed() {
    #[cfg(fuzzing)]
    {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(gateway::contain::install_hook);
    }
}

/// The documents the fuzzed updates are applied to: a text edited by two clients (ids 1 and 2)
/// in turn and concurrently, inserts and deletes, and a map entry; stored as the rooms store
/// them (one update per edit) and as one snapshot.
struct SeedDocument {
    /// One update per edit, in order.
    updates: Vec<Bytes>,
    /// The whole document as one update.
    snapshot: Bytes,
}

fn seed_document() -> &'static SeedDocument {
    static SEED: OnceLock<SeedDocument> = OnceLock::new();
    SEED.get_or_init(|| {
        let (a, b) = (Doc::with_client_id(1), Doc::with_client_id(2));
        let mut updates = Vec::new();
        let sync = |from: &Doc, to: &Doc| {
            let sv = to.transact().state_vector();
            let diff = from.transact().encode_state_as_update_v1(&sv);
            to.transact_mut()
                .apply_update(yrs::Update::decode_v1(&diff).expect("a diff decodes"))
                .expect("a diff applies");
        };
        let mut edit = |doc: &Doc, f: &dyn Fn(&mut yrs::TransactionMut)| {
            let mut txn = doc.transact_mut();
            f(&mut txn);
            updates.push(Bytes::from(txn.encode_update_v1()));
        };
        // The shared types first: getting one opens a transaction of its own.
        let (text_a, text_b) = (a.get_or_insert_text("text"), b.get_or_insert_text("text"));
        let meta = a.get_or_insert_map("meta");
        edit(&a, &|t| text_a.insert(t, 0, "hello"));
        sync(&a, &b);
        edit(&b, &|t| text_b.insert(t, 5, " world"));
        sync(&b, &a);
        edit(&a, &|t| text_a.insert(t, 5, ","));
        edit(&a, &|t| text_a.remove_range(t, 0, 1));
        // Concurrent with a's last two edits.
        edit(&b, &|t| text_b.insert(t, 11, "!"));
        edit(&a, &|t| {
            meta.insert(t, "title", "greeting");
        });
        sync(&a, &b);
        edit(&b, &|t| text_b.insert(t, 3, "XY"));
        edit(&b, &|t| text_b.remove_range(t, 2, 3));
        sync(&b, &a);
        let snapshot = Bytes::from(
            a.transact()
                .encode_state_as_update_v1(&StateVector::default()),
        );
        SeedDocument { updates, snapshot }
    })
}

/// The size limit the fuzzed rooms accept updates within.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// A Yjs update (lib0 v1) from a client or from the store. The input is decoded as a
/// y-websocket message and as a sync `update` carrying it; then it is applied to rooms holding
/// no document, the seed document as its stored updates, and the seed document as one snapshot:
/// while loading (among the stored updates, after the first half of them, and again), and once
/// ready (as a client's update, twice; within a size limit it exceeds, refused and nothing
/// changes; a document a sync or snapshot then fails on is loaded again, as the shard does). yrs panics are contained by `CrdtRoom::apply` and are fine; the check fails on a
/// panic that escapes (the process aborts under libFuzzer) or when afterwards a room does not
/// encode its state, does not answer a sync (when not poisoned), has lost the stored updates
/// merged before the input, or encodes a snapshot that does not load back. The input is also
/// answered as a client's state vector.
pub fn yrs_update(data: &[u8]) {
    contained_panics_allowed();
    let _ = decode_client_message(data);
    let _ = decode_client_message(&Message::Sync(SyncMessage::Update(data.to_vec())).encode_v1());
    let update = Bytes::copy_from_slice(data);
    let seed = seed_document();
    let stores: [&[Bytes]; 3] = [&[], &seed.updates, std::slice::from_ref(&seed.snapshot)];
    for stored in stores {
        // Loading: the input stored among the document's updates.
        let (before, after) = stored.split_at(stored.len() / 2);
        let mut room = CrdtRoom::new();
        for u in before {
            room.apply(u).expect("a seed update applies");
        }
        let floor = state_vector_of(&mut room);
        let _ = room.apply(&update);
        let _ = room.apply(&update);
        for u in after {
            let _ = room.apply(u);
        }
        room.ready();
        assert!(!room.poisoned, "a loading room is rebuilt, not poisoned");
        assert!(room.encode_state().is_ok(), "a loaded room encodes");
        check_room(&mut room, &floor, data);

        // Ready: the input from a client.
        let mut room = CrdtRoom::new();
        for u in stored {
            room.apply(u).expect("a seed update applies");
        }
        room.ready();
        let floor = state_vector_of(&mut room);
        let state = room.encode_state().ok();
        if !data.is_empty() {
            assert_eq!(
                room.accept(&update, data.len() - 1),
                Err(CrdtError::DocumentTooLarge)
            );
            assert_eq!(
                room.encode_state().ok(),
                state,
                "a refused update changed nothing"
            );
        }
        let mut accepted = Vec::new();
        for _ in 0..2 {
            if !room.poisoned && room.accept(&update, MAX_DOCUMENT_BYTES).is_ok() {
                accepted.push(update.clone());
            }
        }
        // A sync or a snapshot that fails on the document flags it too.
        if !room.poisoned {
            let _ = room.answer_sync(&StateVector::default().encode_v1());
            let _ = room.snapshot_state();
        }
        if room.poisoned {
            // The shard loads a poisoned document again from the store: the seed and the
            // updates it accepted (never a refused one).
            let mut reloaded = CrdtRoom::new();
            for u in stored.iter().chain(&accepted) {
                let _ = reloaded.apply(u);
            }
            reloaded.ready();
            assert!(
                !reloaded.poisoned,
                "a loading room is rebuilt, not poisoned"
            );
            assert!(reloaded.encode_state().is_ok(), "a loaded room encodes");
            check_room(&mut reloaded, &floor, data);
        } else {
            check_room(&mut room, &floor, data);
        }
    }
}

/// What holds for a room after the fuzzed update: it encodes its state (uncontained in the
/// shard, as for a snapshot), that snapshot loads back, it still holds `floor`, and it answers
/// a sync from nothing, from its own state vector and from the input.
fn check_room(room: &mut CrdtRoom, floor: &StateVector, input: &[u8]) {
    // A state yrs cannot encode, or encodes unreadably, is refused by `encode_state` (never
    // stored as a snapshot): a contained failure, not a finding.
    let state = room.encode_state();
    let sv = state_vector_of(room);
    for (client, clock) in floor.iter() {
        assert!(
            sv.get(client) >= *clock,
            "client {client}: clock {} below {clock}",
            sv.get(client)
        );
    }
    if let Ok(state) = state {
        let mut reloaded = CrdtRoom::new();
        if let Err(e) = reloaded.apply(&Bytes::from(state)) {
            panic!("the room's snapshot does not load back: {e}");
        }
    }
    room.answer_sync(&sv.encode_v1())
        .expect("a room answers its own state vector");
    let _ = room.answer_sync(input);
}

/// A room's state vector, from its answer to a sync from nothing.
fn state_vector_of(room: &mut CrdtRoom) -> StateVector {
    let frames = room
        .answer_sync(&StateVector::default().encode_v1())
        .expect("a room answers a sync from nothing");
    let payload = proto_codec::sse::payload_of(&frames[1], 0x82).expect("a binary frame");
    match Message::decode_v1(payload).expect("our sync step 1 decodes") {
        Message::Sync(SyncMessage::SyncStep1(sv)) => sv,
        other => panic!("not a sync step 1: {other:?}"),
    }
}

/// The connections (and another node, `None`) the awareness input speaks for.
const OWNERS: [Option<(usize, u64)>; 4] = [Some((0, 1)), Some((0, 2)), Some((1, 1)), None];

/// An awareness state as the room should keep it.
#[derive(Debug)]
struct KeptState {
    clock: u32,
    json: String,
    owner: Option<(usize, u64)>,
    updated: Instant,
}

/// y-protocols awareness messages from several connections of this node and from another node.
/// The first byte sets the limits (1–8 states, 8–1024 bytes a state, 1–4 client ids a
/// connection); then each step is an op byte, a length byte and that many bytes. The op's bits
/// 0–1 pick the owner (`OWNERS`), bits 2–3 advance the clock (0, 1, 10 or 25 s; a state not
/// renewed for 20 s may be taken over), bits 4–5 what to do: the bytes as an awareness message
/// (0, 1), an awareness message built from them (2: 3 bytes an entry, client id 0–15, clock,
/// JSON length, 0 meaning `null`), or the owner's connection closing (3; for `None`, other
/// nodes' states expiring after 30 s). No panic; after each step the room's states
/// (`awareness_frames`) are exactly those its answers relayed, at most `max_states` and none
/// over `max_state_bytes`; a closing connection's removal names exactly its states; once every
/// connection has closed, only other nodes' states remain.
pub fn awareness(data: &[u8]) {
    contained_panics_allowed();
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let limits = AwarenessLimits {
        max_states: 1 + usize::from(first & 7),
        max_per_connection: 1 + usize::from((first >> 3) & 3),
        max_state_bytes: 8 << (first >> 5),
    };
    let mut room = CrdtRoom::new();
    let mut kept: HashMap<u64, KeptState> = HashMap::new();
    let mut now = Instant::now();
    while let Some((&op, tail)) = rest.split_first() {
        let (len, tail) = tail
            .split_first()
            .map_or((0, tail), |(n, t)| (usize::from(*n).min(t.len()), t));
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        let owner = OWNERS[usize::from(op & 3)];
        now += Duration::from_secs([0, 1, 10, 25][usize::from((op >> 2) & 3)]);
        match (op >> 4) & 3 {
            3 => match owner {
                Some(o) => close_owner(&mut room, &mut kept, o),
                None => {
                    let ttl = Duration::from_secs(30);
                    room.expire_awareness(now, ttl);
                    kept.retain(|_, s| s.owner.is_some() || now.duration_since(s.updated) < ttl);
                }
            },
            kind => {
                let built;
                let message = if kind == 2 {
                    built = awareness_message(chunk);
                    &built
                } else {
                    chunk
                };
                if let Ok(Some(relayed)) = room.awareness_update(message, owner, now, limits) {
                    for (id, (clock, json)) in states_of(&[relayed]) {
                        if json == "null" {
                            assert!(kept.remove(&id).is_some(), "removal of {id} relayed");
                        } else {
                            let state = KeptState {
                                clock,
                                json,
                                owner,
                                updated: now,
                            };
                            kept.insert(id, state);
                        }
                    }
                }
            }
        }
        check_awareness(&room, &kept, limits);
    }
    for o in OWNERS.iter().flatten() {
        close_owner(&mut room, &mut kept, *o);
        check_awareness(&room, &kept, limits);
    }
    assert!(kept.values().all(|s| s.owner.is_none()));
}

/// An awareness message from 3-byte entries (client id 0–15, clock, JSON length; 0 is `null`).
fn awareness_message(chunk: &[u8]) -> Vec<u8> {
    let clients = chunk
        .chunks_exact(3)
        .map(|e| {
            let json: Arc<str> = match e[2] {
                0 => "null".into(),
                n => "x".repeat(usize::from(n)).into(),
            };
            let entry = AwarenessUpdateEntry {
                clock: u32::from(e[1]),
                json,
            };
            (ClientID::new(u64::from(e[0] & 15)), entry)
        })
        .collect();
    Message::Awareness(AwarenessUpdate { clients }).encode_v1()
}

/// A connection closes: the removal it relays names exactly its states, each with a newer clock.
fn close_owner(room: &mut CrdtRoom, kept: &mut HashMap<u64, KeptState>, owner: (usize, u64)) {
    let mut expected: HashMap<u64, (u32, String)> = HashMap::new();
    kept.retain(|id, s| {
        if s.owner != Some(owner) {
            return true;
        }
        expected.insert(*id, (s.clock.saturating_add(1), "null".into()));
        false
    });
    match room.remove_owner(owner) {
        Some(removal) => assert_eq!(states_of(&[removal]), expected, "removal of {owner:?}"),
        None => assert!(
            expected.is_empty(),
            "{owner:?}'s states not removed: {expected:?}"
        ),
    }
}

/// The room keeps exactly `kept`, within its limits.
fn check_awareness(room: &CrdtRoom, kept: &HashMap<u64, KeptState>, limits: AwarenessLimits) {
    let states = states_of(&room.awareness_frames());
    assert!(states.len() <= limits.max_states, "{} states", states.len());
    for (id, (_, json)) in &states {
        assert!(json.len() <= limits.max_state_bytes, "state {id}: {json:?}");
    }
    let expected: HashMap<u64, (u32, String)> = kept
        .iter()
        .map(|(id, s)| (*id, (s.clock, s.json.clone())))
        .collect();
    assert_eq!(states, expected, "the states kept are not those relayed");
}

/// The states in awareness frames (binary WebSocket frames), by client id.
fn states_of(frames: &[Bytes]) -> HashMap<u64, (u32, String)> {
    let mut states = HashMap::new();
    for frame in frames {
        // A frame (`awareness_frames`) or a message (`awareness_update`, `remove_owner`).
        let payload = proto_codec::sse::payload_of(frame, 0x82).unwrap_or(frame);
        let Ok(Message::Awareness(update)) = Message::decode_v1(payload) else {
            panic!("not an awareness message: {payload:?}");
        };
        for (id, e) in update.clients {
            let again = states.insert(id.get(), (e.clock, e.json.to_string()));
            assert!(again.is_none(), "client {id} in two frames");
        }
    }
    states
}

/// Pusher's limits, as docs/pusher.md states them: channels an event, events a batch, bytes of
/// an event name.
const PUSHER_MAX_CHANNELS: usize = 100;
const PUSHER_MAX_BATCH: usize = 10;
const PUSHER_MAX_NAME: usize = 200;

/// The Pusher HTTP API: text up to the first NUL byte is `METHOD route` (the route being the
/// path after `/apps/<id>/`), the bytes after it a body (without a NUL byte, the whole input is
/// both). Routing never panics and a route found slices within the input: a channel or user it
/// names is a non-empty part of it, and the route is exactly `channels/<it>`,
/// `channels/<it>/users` or `users/<it>/terminate_connections`; any such route is found back.
/// The body, as `POST events` and as `POST batch_events` (`parse_events`,
/// `parse_batch_events`) of two apps (one with the default `pusher` namespace, one with a
/// configured one and a small data limit): a refusal is 400 or 413; an accepted body has 1–10
/// events of 1–100 channels each, and each (room, data) is the channel's room (a valid room of
/// the `pusher` namespace), a stored event within the namespace's data limit naming the event
/// (1–200 bytes) and that channel.
pub fn pusher_api(data: &[u8]) {
    let (head, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    if let Ok(head) = std::str::from_utf8(head) {
        let (method, route) = head.split_once(' ').unwrap_or((head, ""));
        check_route(method, route);
        check_route(route, method);
        if !route.is_empty() {
            let users = format!("channels/{route}/users");
            assert_eq!(Route::of("GET", &users), Route::ChannelUsers(route));
            let terminate = format!("users/{route}/terminate_connections");
            assert_eq!(
                Route::of("POST", &terminate),
                Route::TerminateConnections(route)
            );
        }
    }
    for (config, namespaces) in pusher_setups() {
        for app in &config.pusher.apps {
            let events = parse_events(config, namespaces, app, body);
            check_pusher_events(events, body, false, app, namespaces);
            let batch = parse_batch_events(config, namespaces, app, body);
            check_pusher_events(batch, body, true, app, namespaces);
        }
    }
}

/// What holds for any route `Route::of` finds.
fn check_route(method: &str, route: &str) {
    let found = Route::of(method, route);
    let within = |part: &str| {
        let (start, at) = (route.as_ptr() as usize, part.as_ptr() as usize);
        !part.is_empty() && at >= start && at + part.len() <= start + route.len()
    };
    match found {
        Route::Events => assert_eq!((method, route), ("POST", "events")),
        Route::BatchEvents => assert_eq!((method, route), ("POST", "batch_events")),
        Route::Channels => assert_eq!((method, route), ("GET", "channels")),
        Route::Channel(c) => {
            assert!(within(c), "{found:?} of {route:?}");
            assert_eq!((method, route), ("GET", format!("channels/{c}").as_str()));
            assert!(!c.ends_with("/users"), "{found:?}");
        }
        Route::ChannelUsers(c) => {
            assert!(within(c), "{found:?} of {route:?}");
            let expected = format!("channels/{c}/users");
            assert_eq!((method, route), ("GET", expected.as_str()));
        }
        Route::TerminateConnections(u) => {
            assert!(within(u), "{found:?} of {route:?}");
            let expected = format!("users/{u}/terminate_connections");
            assert_eq!((method, route), ("POST", expected.as_str()));
        }
        Route::NotFound => {}
    }
}

/// Two configurations with a Pusher app each: one with the default `pusher` namespace, one
/// with `[namespaces.pusher]` holding events to 300 bytes and an app id long enough that long
/// channel names make rooms over the length limit.
fn pusher_setups() -> &'static [(Config, Namespaces)] {
    static SETUPS: OnceLock<Vec<(Config, Namespaces)>> = OnceLock::new();
    SETUPS.get_or_init(|| {
        let app = |id: &str| PusherApp {
            id: id.into(),
            key: format!("key-{id}"),
            secret: "secret".into(),
            enable_client_messages: false,
            max_connections: 0,
            max_client_events_per_second: 0,
            webhooks: Vec::new(),
        };
        let mut plain = Config::default();
        plain.pusher.apps.push(app("1"));
        let mut limited = Config::default();
        limited.pusher.apps.push(app(&"a".repeat(100)));
        let mut policy = limited.rooms.clone();
        policy.max_data_bytes = 300;
        limited
            .namespaces
            .insert(proto_codec::pusher::NAMESPACE.into(), policy);
        [plain, limited]
            .into_iter()
            .map(|c| {
                let ns = Namespaces::from_config(&c);
                (c, ns)
            })
            .collect()
    })
}

/// What holds for a verdict on an events (or batch) body.
fn check_pusher_events(
    verdict: Result<EventItems, (u16, String)>,
    body: &[u8],
    batch: bool,
    app: &PusherApp,
    namespaces: &Namespaces,
) {
    let items = match verdict {
        Ok(items) => items,
        Err((status, reason)) => {
            assert!(matches!(status, 400 | 413), "{status} {reason}");
            return;
        }
    };
    let max_events = if batch { PUSHER_MAX_BATCH } else { 1 };
    assert!((1..=max_events * PUSHER_MAX_CHANNELS).contains(&items.len()));
    let mut channels = Vec::new();
    for (room, data) in &items {
        assert_eq!(validate_room(room), Ok(()), "room {room:?}");
        let ns = namespaces.of(room).expect("a pusher room has a namespace");
        assert_eq!(&*ns.name, proto_codec::pusher::NAMESPACE, "room {room:?}");
        let limit = ns.policy.max_data_bytes;
        assert!(data.len() <= limit, "{} bytes over {limit}", data.len());
        let stored: StoredEvent<'_> = serde_json::from_slice(data).expect("a stored event decodes");
        assert!((1..=PUSHER_MAX_NAME).contains(&stored.event.len()));
        assert!(stored.user_id.is_none());
        if let Some(s) = &stored.socket_id {
            assert!(proto_codec::pusher::valid_socket_id(s), "socket_id {s:?}");
        }
        let expected = match stored
            .channel
            .strip_prefix(gateway::pusher::USER_CHANNEL_PREFIX)
        {
            Some(user) => gateway::pusher::user_room(&app.id, user),
            None => proto_codec::pusher::room_of(&app.id, &stored.channel),
        };
        assert_eq!(expected.as_deref(), Some(room.as_str()));
        channels.push(stored.channel.into_owned());
    }
    // The events as sent, when the body is JSON serde_json reads into a `Value` (a data value
    // nested deeper than its recursion limit is not), by name or, as serde reads a struct from
    // an array too, by position.
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let events: Vec<&Value> = if batch {
        let list = field(&value, "batch", 0).and_then(Value::as_array);
        list.expect("an accepted batch has a list").iter().collect()
    } else {
        vec![&value]
    };
    assert!((1..=max_events).contains(&events.len()));
    let mut sent = Vec::new();
    for e in events {
        let listed = match (field(e, "channel", 2), field(e, "channels", 3)) {
            (Some(Value::String(c)), None) => vec![c.clone()],
            (None, Some(Value::Array(cs))) => cs
                .iter()
                .map(|c| c.as_str().expect("a channel is a string").to_string())
                .collect(),
            other => panic!("accepted with channel and channels {other:?}"),
        };
        assert!((1..=PUSHER_MAX_CHANNELS).contains(&listed.len()));
        sent.extend(listed);
    }
    assert_eq!(channels, sent, "the channels stored are not those sent");
}

/// A struct's field in JSON, by name in an object or by position in an array (absent when
/// missing or `null`, as serde reads an `Option`).
fn field<'v>(v: &'v Value, name: &str, position: usize) -> Option<&'v Value> {
    match v {
        Value::Object(m) => m.get(name),
        Value::Array(a) => a.get(position),
        _ => None,
    }
    .filter(|f| !f.is_null())
}

/// The SSE and long-poll request (`GET /sse?…`, `GET /poll?…`): text up to the first NUL byte
/// is the query string, up to the next a `Last-Event-ID` value, after it an `Origin`. A head
/// that parses is decided by `stream_request` as a stream and as a poll, with anonymous access
/// (a `nr` namespace without recovery, a `closed` one needing a token, a Pusher app whose
/// rooms are closed to native clients, at most 4 rooms, one allowed origin). No panic; a
/// refusal is a 4xx response; an accepted request's rooms are every `room` parameter, decoded,
/// in order, each valid (`validate_room`), distinct, readable by the principal, and resumed
/// (`since`, `Last-Event-ID`) only where the namespace recovers.
pub fn stream_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let query = parts.next().unwrap_or_default();
    let mut headers = String::new();
    if let Some(id) = parts.next() {
        headers.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    if let Some(origin) = parts.next() {
        headers.push_str(&format!("Origin: {origin}\r\n"));
    }
    for (path, poll) in [("/sse", false), ("/poll", true)] {
        let head = format!("GET {path}?{query} HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        let Ok(Some(request)) = proto_codec::http::parse_request(head.as_bytes()) else {
            continue;
        };
        let (config, auth, namespaces) = stream_setup();
        let gate = Gate {
            config,
            auth,
            namespaces,
            draining: false,
            admission: &Verdict::Admit,
        };
        match stream_request(&request, &gate, poll) {
            HttpDecision::Stream {
                response,
                rooms,
                principal,
            } => {
                assert!(!poll);
                assert!(response.starts_with(b"HTTP/1.1 200 "));
                check_stream_rooms(&request, &rooms, &principal, &gate);
            }
            HttpDecision::Poll {
                rooms, principal, ..
            } => {
                assert!(poll);
                check_stream_rooms(&request, &rooms, &principal, &gate);
            }
            HttpDecision::Reply {
                status, response, ..
            } => {
                assert!((400..500).contains(&status), "refused with {status}");
                let line = format!("HTTP/1.1 {status} ");
                assert!(response.starts_with(line.as_bytes()));
            }
            other => panic!("a stream request decided {other:?}"),
        }
    }
}

/// What holds for the rooms of an accepted stream or poll.
fn check_stream_rooms(
    request: &proto_codec::http::Request<'_>,
    rooms: &[StreamRoom],
    principal: &Principal,
    gate: &Gate<'_>,
) {
    let asked: Vec<String> = request
        .query_params("room")
        .map(|r| r.expect("an accepted room decodes").into_owned())
        .collect();
    let names: Vec<&str> = rooms.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(names, asked, "the rooms are not those asked for");
    assert!(!rooms.is_empty() && rooms.len() <= gate.config.limits.max_rooms_per_connection);
    for (i, (room, since)) in rooms.iter().enumerate() {
        assert_eq!(validate_room(room), Ok(()), "room {room:?}");
        assert!(!names[..i].contains(&room.as_str()), "{room:?} twice");
        let ns = gate
            .namespaces
            .of(room)
            .expect("an accepted room's namespace");
        assert!(ns.native, "{room:?} is a Pusher room");
        assert_eq!(principal.authorize(Action::Subscribe, room, ns), Ok(()));
        if let Some((epoch, _)) = since {
            assert!(ns.policy.recovery, "{room:?} resumed without recovery");
            assert!(!epoch.is_empty());
        }
    }
}

/// Anonymous access (publish) by default, `nr.*` without recovery, `closed.*` for tokens only,
/// a Pusher app, 4 rooms a connection, one allowed origin, and the HS256 key of `jwt`.
fn stream_setup() -> (&'static Config, &'static Authenticator, &'static Namespaces) {
    static SETUP: OnceLock<(Config, Authenticator, Namespaces)> = OnceLock::new();
    let (config, auth, namespaces) = SETUP.get_or_init(|| {
        let mut config = Config::default();
        config.rooms.anonymous = Access::Publish;
        let mut no_recovery = config.rooms.clone();
        no_recovery.recovery = false;
        config.namespaces.insert("nr".into(), no_recovery);
        let mut closed = config.rooms.clone();
        closed.anonymous = Access::None;
        config.namespaces.insert("closed".into(), closed);
        config.pusher.apps.push(PusherApp {
            id: "1".into(),
            key: "key".into(),
            secret: "secret".into(),
            enable_client_messages: false,
            max_connections: 0,
            max_client_events_per_second: 0,
            webhooks: Vec::new(),
        });
        config.limits.max_rooms_per_connection = 4;
        config.websocket.allowed_origins = vec!["https://ok.example".into()];
        config.auth = AuthConfig {
            keys: vec![KeyConfig {
                kid: "hs".into(),
                alg: KeyAlg::HS256,
                secret: String::from_utf8_lossy(SECRET).into_owned().into(),
                secret_file: None,
                public_key_file: None,
            }],
            require_exp: false,
            ..AuthConfig::default()
        };
        let namespaces = Namespaces::from_config(&config);
        let auth = Authenticator::new(&config.auth, namespaces.anonymous_allowed())
            .expect("the stream keys load");
        (config, auth, namespaces)
    });
    (config, auth, namespaces)
}

/// What another node sends on a room's Redis channel (`broker_bridge::redis::wire::parse`), and
/// a live app event's JSON in it (`LiveMsg::app_from_node`): input from the network that every
/// subscriber of the room then gets in its own form. Parsing never panics; a parsed payload
/// written again (`live_payload`) parses the same; an event read from a node is rendered in
/// every wire form without a panic (the JSON form is valid JSON) and, sent on again
/// (`LiveMsg::to_node`), reads back as the same event.
pub fn node_live(data: &[u8]) {
    use broker_bridge::redis::wire::{live_payload, parse, ChannelMsg};
    use gateway::outgoing::{LiveEvent, LiveForms, LiveMsg, Rendered};

    let raw = Bytes::copy_from_slice(data);
    if let Ok(msg) = parse(raw.clone()) {
        match &msg {
            ChannelMsg::Message { data: body, .. } => assert!(raw.ends_with(body)),
            ChannelMsg::Live { instance, event } => {
                let again = parse(Bytes::from(live_payload(instance, event)));
                assert_eq!(again.as_ref(), Ok(&msg));
            }
        }
    }
    // The JSON itself, whatever kind byte came before it.
    let json = data.get(1..).unwrap_or_default();
    for input in [data, json] {
        let Some(event) = LiveMsg::app_from_node(input) else {
            continue;
        };
        for room in ["chat.lobby", "pusher.1/presence-room"] {
            let live = LiveMsg::new(room.into(), event.clone());
            let mut forms = LiveForms::new(&live);
            for conn in node_live_conns() {
                match forms.for_conn(&conn) {
                    Rendered::Send(bytes) if conn.profile.form == gateway::form::Form::Json => {
                        let parsed = serde_json::from_slice::<Value>(&bytes);
                        assert!(parsed.is_ok(), "{:?}", String::from_utf8_lossy(&bytes));
                    }
                    Rendered::Send(_) | Rendered::Skip | Rendered::Close(_) => {}
                }
            }
            if let Some(broker_bridge::LiveEvent::App(sent)) = live.to_node() {
                let back = LiveMsg::app_from_node(&sent).expect("our own node JSON parses");
                assert_eq!(format!("{back:?}"), format!("{event:?}"));
            } else {
                assert!(!matches!(event, LiveEvent::Event { .. }));
            }
        }
    }
}

/// A connection of each wire form (the Pusher one with its state set, as an established one).
fn node_live_conns() -> Vec<gateway::connection::shared::ConnShared> {
    use gateway::connection::shared::ConnShared;
    use gateway::endpoint::Endpoint;
    use gateway::endpoint::{app::App, poll::Poll, pusher::Pusher, sse::Sse, yjs::Yjs};
    let profiles = [
        App.profile(),
        Sse::default().profile(),
        Poll.profile(),
        Yjs {
            room: "doc.a".into(),
        }
        .profile(),
        Pusher::new(Ok(0)).profile(),
    ];
    profiles
        .into_iter()
        .enumerate()
        .map(|(id, profile)| {
            let conn = ConnShared::new(
                id as u64,
                profile,
                false,
                1 << 20,
                Instant::now(),
                std::rc::Rc::new(Principal::anonymous()),
            );
            if profile.form == gateway::form::Form::Pusher {
                *conn.pusher.borrow_mut() = Some(Box::new(gateway::pusher::PusherConn {
                    app: 0,
                    socket_id: "1.2".into(),
                    user: None,
                    presence_users: Default::default(),
                }));
            }
            conn
        })
        .collect()
}
