//! The HTTP side against a [`Shared`] the test fills, over real sockets: the API and its errors,
//! the token and the webhook signatures, the event stream, `/metrics` through promtool, the
//! status page in headless Chromium, the OpenAPI document through schemathesis, TLS.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pgtenant_serve::http::{self, HttpSettings, TlsFiles};
use pgtenant_serve::state::{
    BackupStatus, ClusterStatus, Command, Event, EventKind, LeaderState, Shared, Snapshot,
    SourceStatus, TenantState, TenantStatus,
};
use support::{get, request, EventStream};
use tokio::sync::{mpsc, oneshot};

const SHA: &str = "3f1c2e9a7b6d5c4e3f2a1b0c9d8e7f6a5b4c3d2e";

struct Server {
    address: SocketAddr,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), http::HttpError>>>,
    _files: tempfile::TempDir,
}

impl Server {
    /// Serves `snapshot` on a free port; `configure` may set the token, secret and TLS files
    /// (written under the given directory).
    fn start(
        snapshot: Snapshot,
        configure: impl FnOnce(&mut HttpSettings, &std::path::Path),
    ) -> Server {
        let files = tempfile::tempdir().unwrap();
        let mut settings = HttpSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file: None,
            webhook_secret_file: None,
            tls: None,
        };
        configure(&mut settings, files.path());
        let (shared, commands) = Shared::new(snapshot);
        let shared = Arc::new(shared);
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let served = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(http::run(
                served,
                settings,
                move |address| bound_tx.send(address).unwrap(),
                async move {
                    let _ = stopped.await;
                },
            ))
        });
        let address = bound_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server is bound");
        Server {
            address,
            shared,
            commands,
            stop: Some(stop),
            thread: Some(thread),
            _files: files,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The commands enqueued so far.
    fn commands(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        while let Ok(command) = self.commands.try_recv() {
            out.push(command);
        }
        out
    }

    /// Stops the server; panics unless `run` returned Ok within 5 s.
    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the server did not stop within 5 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            thread.join().unwrap().expect("run returned Ok");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.shut_down();
        }
    }
}

fn token(settings: &mut HttpSettings, dir: &std::path::Path) {
    let file = dir.join("token");
    std::fs::write(&file, "s3cret-token\n").unwrap();
    settings.token_file = Some(file);
}

fn webhook_secret(settings: &mut HttpSettings, dir: &std::path::Path) {
    let file = dir.join("webhook");
    std::fs::write(&file, "hook-secret\n").unwrap();
    settings.webhook_secret_file = Some(file);
}

fn event(id: u64, kind: EventKind, tenant: Option<&str>, message: &str) -> Event {
    Event {
        id,
        at: "2026-12-01T09:00:00Z".into(),
        kind,
        tenant: tenant.map(str::to_string),
        cluster: Some("main".into()),
        revision: Some(SHA.into()),
        message: message.into(),
        duration_ms: Some(42),
    }
}

/// Two clusters, tenants in several states, a few events: what a running service shows.
fn fixture() -> Snapshot {
    let mut snapshot = Snapshot {
        leader: LeaderState::Active,
        instance: "host-a:4242".into(),
        started_at: "2026-12-01T08:00:00Z".into(),
        source: SourceStatus {
            kind: "git".into(),
            location: "https://git.example/platform/apps.git (main)".into(),
            revision: Some(SHA.into()),
            last_read_at: Some("2026-12-01T09:00:00Z".into()),
            error: None,
            diagnostics: vec![],
        },
        ..Snapshot::default()
    };
    for (name, port) in [("main", 5432), ("edge", 5433)] {
        snapshot.clusters.insert(
            name.into(),
            ClusterStatus {
                name: name.into(),
                endpoint: format!("db-{name}.internal:{port}"),
                reachable: true,
                last_reconcile_at: Some("2026-12-01T09:00:01Z".into()),
                last_reconcile_ok: Some(true),
                last_backup: Some(BackupStatus {
                    kind: "diff".into(),
                    at: "2026-12-01T02:00:00Z".into(),
                }),
                last_drift_pass_at: Some("2026-12-01T08:55:00Z".into()),
                last_drift_pass_ms: Some(1800),
                ..ClusterStatus::default()
            },
        );
    }
    let tenant = |name: &str, cluster: &str, state: TenantState| TenantStatus {
        tenant: name.into(),
        database: name.replace('/', "_"),
        cluster: cluster.into(),
        state,
        preset: "small".into(),
        mode: "managed".into(),
        file: Some(format!("{name}/values.yaml")),
        last_applied_revision: Some(SHA.into()),
        last_applied_at: Some("2026-12-01T09:00:01Z".into()),
        last_verified_at: Some("2026-12-01T09:00:01Z".into()),
        last_backup_at: Some("2026-12-01T02:00:00Z".into()),
        size_bytes: Some(7_654_321),
        connections: Some(3),
        ..TenantStatus::default()
    };
    for t in [
        tenant("shop/orders", "main", TenantState::InSync),
        TenantStatus {
            drift: vec![
                "grant CONNECT on database shop_carts to shop_carts_app".into(),
                "set connection limit of shop_carts_app to 20".into(),
            ],
            ..tenant("shop/carts", "main", TenantState::Drifted)
        },
        TenantStatus {
            last_error: Some("connecting: timeout".into()),
            retry_at: Some("2026-12-01T09:01:00Z".into()),
            ..tenant("blog/posts", "edge", TenantState::Failed)
        },
        tenant("blog/comments", "edge", TenantState::Pending),
    ] {
        snapshot.tenants.insert(t.tenant.clone(), t);
    }
    snapshot.next_event_id = 3;
    snapshot.recent_events.extend([
        event(1, EventKind::SourceChanged, None, "read revision 3f1c2e9a"),
        event(
            2,
            EventKind::Reconciled,
            Some("shop/orders"),
            "applied 4 changes",
        ),
        event(
            3,
            EventKind::Failed,
            Some("blog/posts"),
            "connecting: timeout",
        ),
    ]);
    snapshot
}

#[test]
fn healthz_and_readyz_follow_leader_source_and_clusters() {
    let server = Server::start(fixture(), |_, _| {});
    assert_eq!(get(server.address, "/healthz").status, 200);
    let ready = get(server.address, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["ready"], true);

    server.shared.update(|s| s.leader = LeaderState::Standby);
    let standby = get(server.address, "/readyz");
    assert_eq!(standby.status, 503);
    assert_eq!(standby.json()["leader"], "standby");

    server.shared.update(|s| {
        s.leader = LeaderState::Active;
        s.source.error = Some("fetching: connection refused".into());
    });
    assert_eq!(get(server.address, "/readyz").status, 503);

    server.shared.update(|s| {
        s.source.error = None;
        s.clusters.get_mut("edge").unwrap().last_reconcile_ok = Some(false);
    });
    let failing = get(server.address, "/readyz");
    assert_eq!(failing.status, 503);
    assert!(failing.body.contains("cluster edge: last reconcile failed"));
    // Liveness does not depend on any of it.
    assert_eq!(get(server.address, "/healthz").status, 200);
}

#[test]
fn tenants_api_lists_details_and_answers_json_errors() {
    let server = Server::start(fixture(), |_, _| {});
    let list = get(server.address, "/api/v1/tenants").json();
    assert_eq!(list["revision"], SHA);
    let names: Vec<&str> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["blog/comments", "blog/posts", "shop/carts", "shop/orders"]
    );

    let detail = get(server.address, "/api/v1/tenants/blog/posts");
    assert_eq!(detail.status, 200);
    let detail = detail.json();
    assert_eq!(detail["state"], "failed");
    assert_eq!(detail["cluster"], "edge");
    assert_eq!(detail["last_error"], "connecting: timeout");
    assert_eq!(detail["events"][0]["id"], 3);

    for path in ["/api/v1/tenants/blog/nope", "/api/v1/nothing-here"] {
        let missing = get(server.address, path);
        assert_eq!(missing.status, 404, "{path}");
        assert!(missing
            .header("content-type")
            .unwrap()
            .contains("application/json"));
        assert!(
            missing.json()["error"].is_string(),
            "{path}: {}",
            missing.body
        );
    }
    let wrong_method = request(server.address, "DELETE", "/api/v1/tenants", &[], b"");
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.json()["error"].is_string());
}

#[test]
fn plan_lists_the_pending_operations_per_tenant() {
    let server = Server::start(fixture(), |_, _| {});
    let plan = get(server.address, "/api/v1/plan").json();
    assert_eq!(plan["pending"], 2);
    assert_eq!(plan["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(plan["tenants"][0]["tenant"], "shop/carts");
    assert_eq!(plan["tenants"][0]["state"], "drifted");
    assert_eq!(
        plan["tenants"][0]["operations"][1],
        "set connection limit of shop_carts_app to 20"
    );
}

#[test]
fn reconcile_needs_the_bearer_token_and_only_enqueues() {
    let without = Server::start(fixture(), |_, _| {});
    let refused = request(
        without.address,
        "POST",
        "/api/v1/reconcile",
        &[("Authorization", "Bearer anything")],
        b"",
    );
    assert_eq!(refused.status, 403, "no token file: mutations are off");

    let mut server = Server::start(fixture(), token);
    let address = server.address;
    let post = |headers: &[(&str, &str)], path: &str| request(address, "POST", path, headers, b"");
    let anonymous = post(&[], "/api/v1/reconcile");
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    assert!(anonymous.json()["error"].is_string());
    for wrong in [
        "Bearer s3cret-toke",
        "Bearer s3cret-token2",
        "Basic czNjcmV0LXRva2Vu",
    ] {
        let status = post(&[("Authorization", wrong)], "/api/v1/reconcile").status;
        assert!(status == 403 || status == 401, "{wrong}: {status}");
    }
    let auth = [("Authorization", "Bearer s3cret-token")];
    let unknown = post(&auth, "/api/v1/reconcile?tenant=shop/nope");
    assert_eq!(unknown.status, 404);
    assert_eq!(server.commands(), []);

    let all = post(&auth, "/api/v1/reconcile");
    assert_eq!(all.status, 202, "{}", all.body);
    assert_eq!(all.json()["accepted"], "reconcile");
    let one = post(&auth, "/api/v1/reconcile?tenant=shop%2Fcarts");
    assert_eq!(one.status, 202, "{}", one.body);
    assert_eq!(
        server.commands(),
        [
            Command::Reconcile { tenant: None },
            Command::Reconcile {
                tenant: Some("shop/carts".into())
            }
        ]
    );
}

#[test]
fn git_webhook_verifies_github_and_gitlab_signatures() {
    use hmac::{Hmac, KeyInit, Mac};
    let without = Server::start(fixture(), |_, _| {});
    let off = request(
        without.address,
        "POST",
        "/api/v1/hooks/git",
        &[("X-Gitlab-Token", "x")],
        b"{}",
    );
    assert_eq!(off.status, 404, "no secret file: no webhook");

    let mut server = Server::start(fixture(), webhook_secret);
    let address = server.address;
    let hook = |headers: &[(&str, &str)], body: &[u8]| {
        request(address, "POST", "/api/v1/hooks/git", headers, body)
    };
    let body = br#"{"ref":"refs/heads/main","after":"3f1c2e9a"}"#;
    assert_eq!(hook(&[], body).status, 401);
    assert_eq!(hook(&[("X-Gitlab-Token", "hook-secre")], body).status, 403);
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"hook-secret").unwrap();
    mac.update(body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    // The signature of another body does not pass.
    assert_eq!(
        hook(&[("X-Hub-Signature-256", &signature)], b"{}").status,
        403
    );
    assert_eq!(server.commands(), []);
    let github = hook(
        &[
            ("X-Hub-Signature-256", &signature),
            ("X-GitHub-Event", "push"),
        ],
        body,
    );
    assert_eq!(github.status, 202, "{}", github.body);
    let gitlab = hook(&[("X-Gitlab-Token", "hook-secret")], body);
    assert_eq!(gitlab.status, 202, "{}", gitlab.body);
    assert_eq!(server.commands(), [Command::FetchNow, Command::FetchNow]);
}

#[test]
fn events_stream_replays_after_last_event_id_then_goes_live_and_ends_on_shutdown() {
    let mut server = Server::start(fixture(), |_, _| {});
    let mut stream = EventStream::open(server.address, Some(1));
    assert_eq!(stream.status, 200);
    assert!(stream
        .headers
        .iter()
        .any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream")));
    let replayed: Vec<_> = (0..2)
        .map(|_| stream.next().expect("a replayed event"))
        .collect();
    assert_eq!(replayed[0].id.as_deref(), Some("2"));
    assert_eq!(replayed[1].id.as_deref(), Some("3"));
    let data: serde_json::Value = serde_json::from_str(&replayed[1].data).unwrap();
    assert_eq!(data["tenant"], "blog/posts");
    assert_eq!(data["kind"], "failed");

    server.shared.publish(event(
        0,
        EventKind::Reconciled,
        Some("shop/carts"),
        "repaired drift",
    ));
    let live = stream.next().expect("the live event");
    assert_eq!(live.id.as_deref(), Some("4"));
    assert!(live.data.contains("repaired drift"));

    // A stream without Last-Event-ID starts with what comes next.
    let mut fresh = EventStream::open(server.address, None);
    server.shared.publish(event(
        0,
        EventKind::Drift,
        Some("shop/orders"),
        "found 1 item",
    ));
    assert_eq!(fresh.next().unwrap().id.as_deref(), Some("5"));
    assert_eq!(stream.next().unwrap().id.as_deref(), Some("5"));

    // Shutdown is not held up by the open streams, and ends them.
    server.shut_down();
    assert!(stream.next().is_none());
    assert!(fresh.next().is_none());
}

#[test]
fn metrics_show_the_snapshot_and_pass_promtool() {
    let server = Server::start(fixture(), |_, _| {});
    let labels = pgtenant_serve::metrics::ClusterResult {
        cluster: "main".into(),
        result: "ok".into(),
    };
    server
        .shared
        .metrics
        .reconciles
        .get_or_create(&labels)
        .inc();
    server
        .shared
        .metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(0.12);
    // What Prometheus asks for: OpenMetrics.
    let openmetrics = request(
        server.address,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
        b"",
    );
    assert_eq!(openmetrics.status, 200);
    assert!(openmetrics
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = openmetrics.body;
    for line in [
        "pgtenant_leader{state=\"active\"} 1",
        "pgtenant_leader{state=\"standby\"} 0",
        "pgtenant_source_up 1",
        "pgtenant_tenants{cluster=\"main\",state=\"in-sync\"} 1",
        "pgtenant_tenants{cluster=\"main\",state=\"drifted\"} 1",
        "pgtenant_tenants{cluster=\"main\",state=\"failed\"} 0",
        "pgtenant_tenants{cluster=\"edge\",state=\"failed\"} 1",
        "pgtenant_drift_items{cluster=\"main\"} 2",
        "pgtenant_held_drops{cluster=\"edge\"} 0",
        "pgtenant_database_size_bytes{cluster=\"main\",tenant=\"shop/orders\"} 7654321",
        "pgtenant_database_connections{cluster=\"edge\",tenant=\"blog/posts\"} 3",
        "pgtenant_cluster_last_reconcile_ok{cluster=\"edge\"} 1",
        "pgtenant_reconciles_total{cluster=\"main\",result=\"ok\"} 1",
        "pgtenant_last_backup_success_timestamp_seconds{cluster=\"main\",kind=\"diff\"} 1796090400.0",
        "pgtenant_last_reconcile_success_timestamp_seconds{cluster=\"main\"} 1796115601.0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE pgtenant_reconciles counter\n"));

    // Anyone else (promtool, curl) gets the Prometheus text format: the same samples.
    let plain = get(server.address, "/metrics");
    assert!(plain
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(plain
        .body
        .contains("# TYPE pgtenant_reconciles_total counter\n"));
    let samples = |text: &str| {
        let mut samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect::<Vec<_>>();
        samples.sort();
        samples
    };
    assert_eq!(samples(&plain.body), samples(&text));
    support::promtool_check_metrics(&plain.body);
}

#[test]
fn status_page_shows_tenants_in_headless_chromium_at_phone_width() {
    let mut snapshot = fixture();
    snapshot.source.error = Some("fetching origin: connection refused".into());
    let server = Server::start(snapshot, |_, _| {});
    let page = get(server.address, "/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.contains("<meta http-equiv=\"refresh\""));
    assert!(page.body.contains("name=\"viewport\""));
    assert!(!page.body.contains("<script"), "works without JavaScript");
    assert!(!page.body.contains("src=\"http"), "no external assets");

    let url = format!("{}/", server.url());
    let Some(dom) = support::chromium_dom(&url) else {
        return;
    };
    assert!(
        dom.contains("<tr data-tenant=\"shop/carts\" data-state=\"drifted\">"),
        "the drifted tenant's row:\n{dom}"
    );
    assert!(dom.contains("<span class=\"state state-failed\">failed</span>"));
    assert!(dom.contains(&SHA[..12]), "the commit served");
    assert!(
        dom.contains("fetching origin: connection refused"),
        "the source error"
    );
    assert!(dom.contains("data-cluster=\"edge\""));
    assert!(dom.contains("applied 4 changes"), "a recent event");
    let screenshot = support::artifacts_dir().join("status-page.png");
    support::chromium_screenshot(&url, &screenshot).unwrap();
    eprintln!("status page screenshot: {}", screenshot.display());
}

#[test]
fn credentials_in_errors_are_never_served() {
    let mut snapshot = fixture();
    let leak = "connecting to postgres://admin:hunter2@db-main.internal/postgres: password=hunter2 refused";
    snapshot.source.location = "https://deploy:hunter2@git.example/platform/apps.git".into();
    snapshot.source.error = Some(leak.into());
    snapshot.clusters.get_mut("main").unwrap().last_error = Some(leak.into());
    snapshot.tenants.get_mut("blog/posts").unwrap().last_error = Some(leak.into());
    let server = Server::start(snapshot, |_, _| {});
    server
        .shared
        .publish(event(0, EventKind::Failed, Some("blog/posts"), leak));
    let mut stream = EventStream::open(server.address, Some(3));
    let streamed = stream.next().unwrap().data;
    for (what, body) in [
        ("page", get(server.address, "/").body),
        ("tenants", get(server.address, "/api/v1/tenants").body),
        (
            "tenant",
            get(server.address, "/api/v1/tenants/blog/posts").body,
        ),
        ("readyz", get(server.address, "/readyz").body),
        ("events", streamed),
    ] {
        assert!(
            !body.contains("hunter2"),
            "{what} shows the password:\n{body}"
        );
        assert!(
            body.contains("***"),
            "{what} says something was hidden:\n{body}"
        );
    }
}

#[test]
fn openapi_document_is_generated_and_passes_schemathesis() {
    let server = Server::start(fixture(), |settings, dir| {
        token(settings, dir);
        webhook_secret(settings, dir);
    });
    let doc = get(server.address, "/api/v1/openapi.json").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/tenants",
        "/api/v1/tenants/{ns}/{db}",
        "/api/v1/plan",
        "/api/v1/reconcile",
        "/api/v1/events",
        "/api/v1/hooks/git",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["components"]["schemas"]["TenantStatus"].is_object());
    // The event stream never ends: schemathesis would wait for its end.
    support::schemathesis(
        &server.url(),
        &["Authorization: Bearer s3cret-token".to_string()],
        &["/api/v1/events"],
    );
}

fn tls_files(dir: &std::path::Path) -> (TlsFiles, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let files = TlsFiles {
        certificate: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.certificate, certificate.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    (files, certificate.der().to_vec())
}

#[test]
fn tls_serves_https_with_the_configured_certificate() {
    let der: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
    let kept = der.clone();
    let server = Server::start(fixture(), move |settings, dir| {
        let (files, certificate) = tls_files(dir);
        *kept.lock().unwrap() = certificate;
        settings.tls = Some(files);
    });
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            der.lock().unwrap().clone(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connection =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(server.address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    use std::io::Write;
    write!(
        tls,
        "GET /api/v1/tenants/shop/orders HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let response = support::read_response(tls);
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["state"], "in-sync");

    // Plain HTTP on the TLS port gets no answer.
    let plain = std::net::TcpStream::connect(server.address).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut plain_write = &plain;
    let _ = plain_write.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buffer = [0u8; 64];
    let read = std::io::Read::read(&mut &plain, &mut buffer).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buffer[..read]).contains("200 OK"));
}
