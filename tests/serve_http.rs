//! `pgtenant serve`'s HTTP side on the real binary against real PostgreSQL: the API, /metrics
//! (promtool) and the status page (headless Chromium) show the same state; the OpenAPI document
//! of the live server passes schemathesis; a reconcile asked over the API is applied and
//! streamed as a server-sent event.

mod common;
#[path = "../crates/serve/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::Env;
use support::{get, request, EventStream};

const TOKEN: &str = "live-token-0123456789";

struct Serve {
    env: Env,
    child: Child,
    address: SocketAddr,
    _files: tempfile::TempDir,
}

impl Serve {
    /// `pgtenant serve` on a free port over a repo declaring shop/orders, once it is in sync.
    fn start() -> Serve {
        let env = Env::new();
        env.declare("shop", "orders", &[("orders", "standard")]);
        let files = tempfile::tempdir().unwrap();
        let token = files.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pgtenant"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PGTENANT_ADMIN_URL", env.admin_url())
            .env("PGTENANT_STATE_DIR", env.state_path())
            .current_dir(env.repo_path())
            .arg("serve")
            .arg(env.repo_path())
            .args(["--listen", "127.0.0.1:0"])
            .arg("--token-file")
            .arg(&token)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let address = loop {
            line.clear();
            assert_ne!(
                stdout.read_line(&mut line).unwrap(),
                0,
                "serve ended before printing its URL"
            );
            if let Some(url) = line
                .trim()
                .strip_prefix("pgtenant serve: status page http://")
            {
                break url.trim_end_matches('/').parse::<SocketAddr>().unwrap();
            }
        };
        // Keep reading its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let serve = Serve {
            env,
            child,
            address,
            _files: files,
        };
        support::poll("shop/orders in sync", Duration::from_secs(60), || {
            let response = get(serve.address, "/api/v1/tenants/shop/orders");
            (response.status == 200 && response.json()["state"] == "in-sync").then_some(())
        });
        serve
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn live_api_metrics_and_page_show_the_same_state() {
    let serve = Serve::start();
    let ready = get(serve.address, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);

    let tenant = get(serve.address, "/api/v1/tenants/shop/orders").json();
    let cluster = tenant["cluster"].as_str().unwrap().to_string();
    assert!(tenant["last_applied_at"].is_string(), "{tenant}");
    assert_eq!(tenant["drift"].as_array().unwrap().len(), 0);
    let list = get(serve.address, "/api/v1/tenants").json();
    assert_eq!(list["tenants"].as_array().unwrap().len(), 1);

    let metrics = get(serve.address, "/metrics").body;
    for line in [
        format!("pgtenant_tenants{{cluster=\"{cluster}\",state=\"in-sync\"}} 1"),
        format!("pgtenant_tenants{{cluster=\"{cluster}\",state=\"failed\"}} 0"),
        format!("pgtenant_drift_items{{cluster=\"{cluster}\"}} 0"),
        "pgtenant_leader{state=\"active\"} 1".to_string(),
        "pgtenant_source_up 1".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in:\n{metrics}"
        );
    }
    // Sizes and connections are read every 30 s (one query per cluster).
    let metrics = support::poll(
        "the tenant's size in /metrics",
        Duration::from_secs(60),
        || {
            let metrics = get(serve.address, "/metrics").body;
            metrics
                .lines()
                .any(|l| {
                    l.starts_with("pgtenant_database_size_bytes{")
                        && l.contains("tenant=\"shop/orders\"")
                })
                .then_some(metrics)
        },
    );
    let size = get(serve.address, "/api/v1/tenants/shop/orders").json()["size_bytes"].clone();
    assert!(
        size.as_i64().unwrap() > 0,
        "the API shows the size too: {size}"
    );
    support::promtool_check_metrics(&metrics);

    let url = format!("{}/", serve.url());
    let Some(dom) = support::chromium_dom(&url) else {
        return;
    };
    assert!(
        dom.contains("<tr data-tenant=\"shop/orders\" data-state=\"in-sync\">"),
        "the tenant's row and state:\n{dom}"
    );
    assert!(dom.contains(&format!("data-cluster=\"{cluster}\"")));
    assert!(dom.contains("id=\"leader\">active<"));
    let screenshot = support::artifacts_dir().join("status-page-live.png");
    support::chromium_screenshot(&url, &screenshot).unwrap();
    eprintln!("status page screenshot: {}", screenshot.display());
}

#[test]
fn live_openapi_passes_schemathesis_and_a_requested_reconcile_is_streamed() {
    let serve = Serve::start();
    let mut events = EventStream::open(serve.address, None);
    assert_eq!(events.status, 200);
    // Drift made by hand: the reconcile asked for repairs it (drift passes are 10 min apart).
    let database = get(serve.address, "/api/v1/tenants/shop/orders").json()["database"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        serve
            .env
            .superuser(None)
            .await
            .batch_execute(&format!(
                "GRANT CONNECT ON DATABASE \"{database}\" TO PUBLIC"
            ))
            .await
            .unwrap();
    });
    let auth = format!("Bearer {TOKEN}");
    let accepted = request(
        serve.address,
        "POST",
        "/api/v1/reconcile?tenant=shop/orders",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let reconciled = loop {
        let event = events.next().expect("the stream stays open");
        let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        if data["tenant"] == "shop/orders" {
            break data;
        }
    };
    assert_eq!(reconciled["kind"], "drift", "{reconciled}");
    assert!(
        reconciled["message"].as_str().unwrap().contains("PUBLIC")
            || reconciled["message"].as_str().unwrap().contains("public"),
        "{reconciled}"
    );

    support::schemathesis(
        &serve.url(),
        &[format!("Authorization: {auth}")],
        &["/api/v1/events"],
    );
}
