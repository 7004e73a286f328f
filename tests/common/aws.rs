//! A local AWS Secrets Manager API for the store tests: the `moto` server (PyPI `moto[server]`),
//! one per test binary on a free loopback port, and [`Store`], which runs a test against the file
//! store or against Secrets Manager (one suite, two backends).
//!
//! The server is started on first use and polled until it answers (no fixed sleep). It runs under
//! `sh`, which kills it when the test binary's end of a pipe closes, that is when the test binary
//! exits, however it exits, and then removes the temporary directory that holds its log (printed
//! when the server does not start; [`Moto::log`] for a test that wants it in its failure). The SDK is given dummy credentials and the endpoint URL through the
//! environment (`AWS_*` variables, which `Env::cmd` passes on): nothing reaches a real AWS account.
//!
//! Against a real account instead (never in CI): see `real_aws_account` in tests/store_aws.rs.
#![allow(dead_code)]

use std::io::Read as _;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::Env;

/// The region the tests use (any region works against moto).
pub const REGION: &str = "eu-west-1";

pub struct Moto {
    /// `sh` holding the server; its stdin is the pipe whose closing stops it.
    _guard: Mutex<Child>,
    pub url: String,
    /// The server's output, in a temporary directory `sh` removes with the server.
    log: std::path::PathBuf,
}

impl Moto {
    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The test binary's moto server, started on first use; None (after [`skip_or_fail`]) when
/// `moto_server` is not installed.
///
/// [`skip_or_fail`]: pgtenant_cluster::skip_or_fail
pub fn moto() -> Option<&'static Moto> {
    static MOTO: OnceLock<Option<Moto>> = OnceLock::new();
    MOTO.get_or_init(start).as_ref()
}

fn start() -> Option<Moto> {
    let found = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        pgtenant_cluster::skip_or_fail("moto_server is not installed (pip install 'moto[server]')");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    // Removed by `sh` once the server is gone (a static is never dropped).
    let dir = tempfile::Builder::new()
        .prefix("pgtenant-moto-")
        .tempdir()
        .expect("a temporary directory for the moto log")
        .keep();
    let log = dir.join("moto.log");
    let child = Command::new("sh")
        .arg("-c")
        // `cat` returns when the test binary (the pipe's writer) is gone; then the server goes too,
        // and its log with it.
        .arg(r#"moto_server -H 127.0.0.1 -p "$1" >"$2" 2>&1 & server=$!; cat >/dev/null; kill "$server"; wait "$server"; rm -rf "$3""#)
        .arg("sh")
        .arg(port.to_string())
        .arg(&log)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers(port) {
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer on {url} within 60 s; its log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Dummy credentials: the SDK signs requests; moto accepts any key.
    for (name, value) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        // SAFETY: set once, before the first test command that reads them is spawned.
        std::env::set_var(name, value);
    }
    Some(Moto {
        _guard: Mutex::new(child),
        url,
        log,
    })
}

/// Whether the server answers an HTTP request on `port`.
fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    use std::io::Write as _;
    if stream
        .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/")
}

/// Which credential store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    File,
    Aws,
}

impl Store {
    /// Whether the backend can be used here (moto installed, for [`Store::Aws`]); when not, the
    /// test has failed already unless skipping is allowed.
    pub fn available(self) -> bool {
        self == Store::File || moto().is_some()
    }

    /// A test environment using this store: for Secrets Manager, a `pgtenant.yaml` in the state
    /// directory selecting it with a prefix of the test's own, so tests share the server.
    pub fn env(self) -> Env {
        let env = Env::new();
        if self == Store::Aws {
            let prefix = unique_prefix();
            aws_config(&env, Some(&prefix));
        }
        env
    }
}

/// A secret name prefix no other test of this binary uses: `t<pid>-<n>/customer/`.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}/customer/",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `<state>/pgtenant.yaml` selecting the moto Secrets Manager with `prefix` (None: the
/// default, `customer/`).
pub fn aws_config(env: &Env, prefix: Option<&str>) {
    let moto = moto().expect("moto_server is available");
    let mut yaml = format!(
        "store:\n  type: aws-secrets-manager\n  region: {REGION}\n  endpointUrl: {}\n",
        moto.url
    );
    if let Some(prefix) = prefix {
        yaml.push_str(&format!("  prefix: {prefix}\n"));
    }
    std::fs::write(env.state_path().join("pgtenant.yaml"), yaml).unwrap();
}

/// Runs the async test `$name(Store)` as `$name::file` and `$name::aws`.
#[macro_export]
macro_rules! both_stores {
    ($name:ident) => {
        mod $name {
            use super::common::aws::Store;

            #[tokio::test]
            async fn file() {
                super::$name(Store::File).await
            }

            #[tokio::test]
            async fn aws() {
                if Store::Aws.available() {
                    super::$name(Store::Aws).await
                }
            }
        }
    };
}

/// As [`both_stores`], for a synchronous test.
#[macro_export]
macro_rules! both_stores_sync {
    ($name:ident) => {
        mod $name {
            use super::common::aws::Store;

            #[test]
            fn file() {
                super::$name(Store::File)
            }

            #[test]
            fn aws() {
                if Store::Aws.available() {
                    super::$name(Store::Aws)
                }
            }
        }
    };
}

/// The prefix the `pgtenant.yaml` of `env` gives the store.
pub fn prefix_of(env: &Env) -> String {
    std::fs::read_to_string(env.state_path().join("pgtenant.yaml"))
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("prefix: ").map(str::to_owned))
        .unwrap_or_else(|| "customer/".to_owned())
}

/// The value (JSON) of the version of secret `<prefix><rest>` that has `stage` (`AWSCURRENT`,
/// `AWSPENDING`, `AWSPREVIOUS`), read directly from moto; None when no version has it.
pub async fn staged(env: &Env, rest: &str, stage: &str) -> Option<serde_json::Value> {
    let store = pgtenant_secrets::AwsSecretsManagerStore::new(pgtenant_secrets::AwsSettings {
        region: Some(REGION.to_owned()),
        endpoint_url: Some(moto()?.url.clone()),
        ..Default::default()
    });
    let value = store
        .client()
        .await
        .unwrap()
        .get_secret_value()
        .secret_id(format!("{}{rest}", prefix_of(env)))
        .version_stage(stage)
        .send()
        .await
        .ok()?;
    Some(serde_json::from_str(value.secret_string()?).unwrap())
}
