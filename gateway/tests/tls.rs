//! TLS on the public listener, checked with clients no one here wrote: Python `websockets` +
//! `ssl` (wss:// with certificate verification and a token), `openssl s_client` (TLS 1.2 and 1.3,
//! ALPN) and curl (https://). Certificate reload on SIGHUP keeps live connections.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Server;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

const SECRET: &str = "tls-test-secret-0123456789-0123456789";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn token() -> String {
    let claims =
        serde_json::json!({"sub": "tls-user", "exp": jsonwebtoken::get_current_timestamp() + 600});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// A TLS server whose certificate files live in their own directory (so the test can swap them).
fn tls_server(plain_too: bool) -> (Server, PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("ringcast-tls-{}-{}", std::process::id(), plain_too));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(fixture("tls-a.crt"), dir.join("cert.pem")).expect("copy cert");
    std::fs::copy(fixture("tls-a.key"), dir.join("key.pem")).expect("copy key");
    let toml = format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"\ndisable_plain = {}\n\
         [auth]\nsubscribe = [\"tls.*\"]\npublish = [\"tls.*\"]\n\
         [[auth.keys]]\nalg = \"HS256\"\nsecret = \"{SECRET}\"\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display(),
        !plain_too
    );
    (Server::start_strict(2, &toml), dir)
}

fn s_client(port: u16, version_flag: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
            "-alpn",
            "http/1.1",
            version_flag,
            "-CAfile",
        ])
        .arg(fixture("tls-ca.crt"))
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client (apt package openssl)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn tls_with_openssl_curl_and_python() {
    let (server, _dir) = tls_server(true);
    let tls = server.tls.expect("tls= in the listening line");

    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(tls.port(), flag);
        assert!(
            out.contains(&format!("Protocol  : {version}"))
                || out.contains(&format!("New, {version}")),
            "{flag}: {out}"
        );
        assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    }
    // TLS 1.1 and older are refused.
    let old = s_client(tls.port(), "-tls1_1");
    assert!(old.contains("Cipher is (NONE)"), "{old}");

    // https:// with curl: the same handshake path answers plain HTTP requests with reasons.
    let out = Command::new("curl")
        .args(["-s", "-i", "--cacert"])
        .arg(fixture("tls-ca.crt"))
        .args([
            "--resolve",
            &format!("localhost:{}:127.0.0.1", tls.port()),
            &format!("https://localhost:{}/ws", tls.port()),
        ])
        .output()
        .expect("curl (apt package curl)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl failed: {text}");
    assert!(text.starts_with("HTTP/1.1 426"), "{text}");

    // wss:// with Python websockets, token in the subprotocol entry.
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/tls_client.py"
        ))
        .arg(tls.to_string())
        .arg(fixture("tls-ca.crt"))
        .arg(token())
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json line");
    assert_eq!(seen["first"]["alpn"], "http/1.1");
    assert_eq!(seen["first"]["cn"], "localhost");

    // The plain listener runs beside the TLS one.
    assert_ne!(server.public.port(), 1);
    let (status, _) = common::http(server.public, "GET", "/ws", &[], "");
    assert_eq!(status, 426);
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_live_connections() {
    let (server, dir) = tls_server(false);
    let tls = server.tls.expect("tls listener");
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/tls_client.py"
        ))
        .arg(tls.to_string())
        .arg(fixture("tls-ca.crt"))
        .arg(token())
        .arg(fixture("tls-ca.crt"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(|l| l.ok()).as_deref(), Some("ready"));
    // A broken file first: the reload fails and the current certificate stays.
    std::fs::write(dir.join("cert.pem"), "not a certificate").expect("write");
    server.signal(libc::SIGHUP);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let still = s_client(tls.port(), "-tls1_3");
    assert!(
        still.contains("subject=CN = localhost\n") && !still.contains("localhost-b"),
        "{still}"
    );
    std::fs::copy(fixture("tls-b.crt"), dir.join("cert.pem")).expect("cert b");
    std::fs::copy(fixture("tls-b.key"), dir.join("key.pem")).expect("key b");
    server.signal(libc::SIGHUP);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "go").expect("signal the client");
    let result = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let status = child.wait().expect("wait");
    assert!(status.success(), "client failed: {result}");
    let seen: serde_json::Value = serde_json::from_str(&result).expect("json line");
    assert_eq!(seen["first"]["cn"], "localhost");
    assert_eq!(seen["second"]["cn"], "localhost-b");
    assert_eq!(seen["first_still_live"], true);
    // Only TLS: the plain listener is off.
    assert_eq!(server.public.port(), 1);
}
