//! Shared by the HTTP tests of `pgtenant-serve` and by tests/serve_http.rs of the root package
//! (which includes this file by path): a minimal HTTP/1.1 client over a plain socket, and the
//! external checkers (promtool, headless Chromium, schemathesis), which fail the test when
//! missing unless PGTENANT_TEST_ALLOW_SKIP=1.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Response {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn read_head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').expect("header");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    (status, headers)
}

fn write_request(
    stream: &mut impl Write,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream.flush().unwrap();
}

/// Reads a whole response (`Connection: close`; chunked or not) from `stream`.
pub fn read_response(stream: impl Read) -> Response {
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader);
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body).unwrap();
    }
    Response {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

/// One request over a fresh connection.
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write_request(&mut stream, address, method, path, headers, body);
    read_response(stream)
}

pub fn get(address: SocketAddr, path: &str) -> Response {
    request(address, "GET", path, &[], b"")
}

/// An open `GET /api/v1/events`: read events one at a time.
pub struct EventStream {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// One server-sent event: its id and data (comments skipped).
#[derive(Debug)]
pub struct SseEvent {
    pub id: Option<String>,
    pub data: String,
}

impl EventStream {
    pub fn open(address: SocketAddr, last_event_id: Option<u64>) -> EventStream {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let id = last_event_id.map(|id| id.to_string());
        let headers: Vec<(&str, &str)> = id
            .as_deref()
            .map(|id| vec![("Last-Event-ID", id)])
            .unwrap_or_default();
        write_request(&mut stream, address, "GET", "/api/v1/events", &headers, b"");
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader);
        EventStream {
            reader,
            status,
            headers,
        }
    }

    /// The next event; None when the server closed the stream.
    pub fn next(&mut self) -> Option<SseEvent> {
        let (mut id, mut data) = (None, Vec::new());
        let mut line = String::new();
        loop {
            // Chunk framing: a size line, the chunk, CRLF. Events are written one per chunk or
            // more; reading lines and dropping the size lines is enough for the tests.
            line.clear();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let text = line.trim_end_matches(['\r', '\n']);
            if let Some(value) = text.strip_prefix("id:") {
                id = Some(value.trim().to_string());
            } else if let Some(value) = text.strip_prefix("data:") {
                data.push(value.trim_start().to_string());
            } else if text.is_empty() && !data.is_empty() {
                return Some(SseEvent {
                    id,
                    data: data.join("\n"),
                });
            } else if text == "0" && data.is_empty() && id.is_none() {
                // The last chunk: the server ended the stream. (A chunk size of 0.)
                return None;
            }
        }
    }
}

/// Polls `done` until it returns Some, for at most `deadline`.
pub fn poll<T>(what: &str, deadline: Duration, mut done: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The path of `program` on PATH; None (after skip_or_fail) when it is not installed.
pub fn tool(program: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        pgtenant_cluster::skip_or_fail(&format!("{program} is not installed ({package})"));
    }
    found
}

/// Where tests keep what a person may want to look at: target/test-artifacts/.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .find(|dir| dir.join("Cargo.lock").is_file())
                .expect("the workspace root")
                .join("target")
        });
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `promtool check metrics` on `text`: panics with its findings unless it is clean.
pub fn promtool_check_metrics(text: &str) {
    let Some(promtool) = tool("promtool", "Debian package prometheus") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && findings.trim().is_empty(),
        "promtool check metrics: {findings}\n--- the metrics:\n{text}"
    );
}

fn chromium(args: &[&str], url: &str) -> Option<String> {
    let chromium = tool("chromium", "Debian package chromium")?;
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium)
        // We run as root in CI: Chromium's sandbox needs an unprivileged user.
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chromium {args:?} {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The DOM of `url` after Chromium loaded it (None: Chromium missing, skip allowed).
pub fn chromium_dom(url: &str) -> Option<String> {
    chromium(&["--dump-dom"], url)
}

/// A phone-width (390×844) screenshot of `url` at `path`.
pub fn chromium_screenshot(url: &str, path: &Path) -> Option<()> {
    let _ = std::fs::remove_file(path);
    chromium(
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=390,844",
        ],
        url,
    )?;
    let png = std::fs::read(path).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    Some(())
}

/// schemathesis against the live server's OpenAPI document: every check, no failure.
/// `exclude` are paths not to test (the endless event stream).
pub fn schemathesis(base: &str, headers: &[String], exclude: &[&str]) {
    let Some(st) = tool("st", "PyPI package schemathesis") else {
        return;
    };
    let mut command = Command::new(st);
    command
        .args(["run", &format!("{base}/api/v1/openapi.json")])
        .args(["--checks", "all", "--max-examples", "30", "--seed", "1"])
        .args(["--request-timeout", "10", "--workers", "2"])
        // Its cache (.schemathesis/) goes there, not into the source tree.
        .current_dir(artifacts_dir())
        .env("NO_COLOR", "1");
    for header in headers {
        command.args(["-H", header]);
    }
    for path in exclude {
        command.args(["--exclude-path", path]);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    std::fs::write(artifacts_dir().join("schemathesis.txt"), stdout.as_bytes()).unwrap();
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
