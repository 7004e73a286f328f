//! A fleet of three real clusters in one config (docs/fleet.md): placement by explicit cluster,
//! by label (the tier of the environment) and by headroom; sticky after a change (reported, not
//! moved); an HA member applied through failover handling; one cluster stopped → its tenants unreachable, the others converge, exit 1; `check`,
//! `list`, `credentials` and `url` over the fleet, each tenant with its cluster.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use assert_cmd::Command;
use common::{Env, Output};
use serde_json::Value;
use tempfile::TempDir;

struct Fleet {
    clusters: Vec<Env>,
    dir: TempDir,
}

impl Fleet {
    /// Three clusters: `a` (tier dev, at most 5 tenants), `b` (tier production), `c` (tier dev).
    fn new() -> Fleet {
        let clusters: Vec<Env> = (0..3).map(|_| Env::new()).collect();
        let dir = TempDir::new().unwrap();
        let mut config = format!("repo: {}\nclusters:\n", clusters[0].repo_path().display());
        for (env, (name, extra)) in clusters.iter().zip([
            // a is applied as an HA cluster (through failovers): a failover timeout makes it one.
            (
                "a",
                "labels: {tier: dev}\n    capacity: {maxTenants: 5}\n    failoverTimeout: 30s",
            ),
            ("b", "labels: {tier: production}"),
            ("c", "labels: {tier: dev}"),
        ]) {
            let url = dir.path().join(format!("{name}-url"));
            std::fs::write(&url, format!("{}\n", env.admin_url())).unwrap();
            std::fs::set_permissions(&url, std::fs::Permissions::from_mode(0o600)).unwrap();
            config.push_str(&format!(
                "  - name: {name}\n    adminUrl: file:{}\n    {extra}\n",
                url.display()
            ));
        }
        std::fs::write(dir.path().join("pgtenant.yaml"), config).unwrap();
        Fleet { clusters, dir }
    }

    fn write(&self, text: &str) {
        self.clusters[0].write("team/app/values.yaml", text);
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::cargo_bin("pgtenant").unwrap();
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PGTENANT_STATE_DIR", self.clusters[0].state_path())
            .env("PGTENANT_CONFIG", self.dir.path().join("pgtenant.yaml"))
            .current_dir(self.dir.path())
            .args(args);
        Output::of(cmd.output().unwrap())
    }

    /// The managed tenants of one cluster, as its own `list` says.
    fn tenants_on(&self, cluster: &str) -> Vec<String> {
        let out = self.run(&["--cluster", cluster, "list", "--format", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let mut tenants: Vec<String> = out
            .json()
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["tenant"].as_str().map(str::to_owned))
            .collect();
        tenants.sort();
        tenants
    }
}

/// The port of cluster `i`'s server, as its admin URL names it.
fn port_of(fleet: &Fleet, i: usize) -> u16 {
    pgtenant_engine::Connector::from_url(&fleet.clusters[i].admin_url())
        .unwrap()
        .endpoint()
        .1
}

/// The entry of `json[list]` whose `key` is `value`.
fn entry<'v>(json: &'v Value, list: &str, key: &str, value: &str) -> &'v Value {
    json[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("{value} not in {list} of {json:#}"))
}

/// The entry of cluster `name` in a fleet JSON's `clusters`.
fn cluster<'v>(json: &'v Value, name: &str) -> &'v Value {
    entry(json, "clusters", "name", name)
}

/// `SELECT current_database(), inet_server_port()` over `uri`.
fn where_logged_in(uri: &str) -> (String, i32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = common::connect(uri, None).await.unwrap();
        let row = client
            .query_one("SELECT current_database(), inet_server_port()", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    })
}

fn tenant<'v>(json: &'v Value, id: &str) -> &'v Value {
    entry(json, "tenants", "tenant", id)
}

const V1: &str = "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n";

#[test]
fn a_fleet_places_by_cluster_label_and_headroom_sticks_and_survives_a_stopped_cluster() {
    let fleet = Fleet::new();
    // explicit → c; production → b (tier label); dev → a or c, a has more headroom (c has one).
    fleet.write(&format!(
        "{V1}  - name: one\n    cluster: c\n    environment: dev\n  - name: two\n    environment: production\n  - name: three\n    environment: dev\n"
    ));
    let plan = fleet.run(&["plan", "--format", "json"]);
    assert_eq!(plan.code, 2, "{}\n{}", plan.stdout, plan.stderr);
    let json = plan.json();
    for (id, cluster) in [("team/one", "c"), ("team/two", "b"), ("team/three", "a")] {
        assert_eq!(tenant(&json, id)["cluster"], cluster, "{json:#}");
        assert_eq!(tenant(&json, id)["state"], "new");
    }
    let apply = fleet.run(&["apply", "--format", "json"]);
    assert_eq!(apply.code, 0, "{}\n{}", apply.stdout, apply.stderr);
    let json = apply.json();
    // serve has one worker for one cluster: on a fleet's member it would create the tenants
    // placed on the others there too, so it refuses the fleet, with or without --cluster.
    for args in [&["serve"][..], &["--cluster", "a", "serve"]] {
        let serve = fleet.run(&[args, &["--listen", "127.0.0.1:0"]].concat());
        assert_eq!(serve.code, 1, "{args:?}: {}", serve.stderr);
        assert!(
            serve.stderr.contains("several clusters"),
            "{}",
            serve.stderr
        );
    }
    assert_eq!(fleet.tenants_on("a"), ["team/three"]);
    // a went through the failover handling (no failover happened), b and c did not.
    assert_eq!(
        cluster(&json, "a")["failovers"],
        serde_json::json!([]),
        "{json:#}"
    );
    assert!(
        cluster(&json, "a")["applied"].as_u64().unwrap() > 0,
        "{json:#}"
    );
    assert!(cluster(&json, "b").get("failovers").is_none(), "{json:#}");
    assert_eq!(fleet.tenants_on("a"), ["team/three"]);
    assert_eq!(fleet.tenants_on("b"), ["team/two"]);
    assert_eq!(fleet.tenants_on("c"), ["team/one"]);
    let again = fleet.run(&["plan"]);
    assert_eq!(
        again.code, 0,
        "converged:\n{}\n{}",
        again.stdout, again.stderr
    );

    // check, list and credentials over the fleet: each tenant with its cluster.
    let check = fleet.run(&["check", "--format", "json"]);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
    let json = check.json();
    assert_eq!(json["in_sync"], true, "{json:#}");
    for (id, on) in [("team/one", "c"), ("team/two", "b"), ("team/three", "a")] {
        assert_eq!(tenant(&json, id)["cluster"], on, "{json:#}");
        assert_eq!(tenant(&json, id)["status"], "in-sync", "{json:#}");
        assert_eq!(cluster(&json, on)["reachable"], true, "{json:#}");
    }
    let list = fleet.run(&["list", "--format", "json"]);
    assert_eq!(list.code, 0, "{}\n{}", list.stdout, list.stderr);
    let json = list.json();
    let listed: Vec<(&str, &str)> = json["databases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["state"] == "managed")
        .map(|d| {
            (
                d["tenant"].as_str().unwrap(),
                d["cluster"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 3, "{json:#}");
    for pair in [("team/one", "c"), ("team/two", "b"), ("team/three", "a")] {
        assert!(listed.contains(&pair), "{pair:?} in {json:#}");
    }
    let text = fleet.run(&["list"]);
    assert!(text.stdout.starts_with("CLUSTER"), "{}", text.stdout);
    for (id, i) in [("team/two", 1), ("team/three", 0)] {
        let out = fleet.run(&["credentials", id, "--role", "read", "--format", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let credentials = out.json();
        assert_eq!(credentials["port"], port_of(&fleet, i), "{credentials:#}");
        let uri = credentials["uri"].as_str().unwrap();
        let (database, port) = where_logged_in(uri);
        assert_eq!(
            (database.as_str(), port),
            (
                credentials["dbname"].as_str().unwrap(),
                i32::from(port_of(&fleet, i))
            )
        );
        let url = fleet.run(&["url", id, "--role", "read"]);
        assert_eq!(url.stdout.trim(), uri, "{}", url.stderr);
    }
    let nowhere = fleet.run(&["credentials", "team/nowhere", "--role", "read"]);
    assert_eq!(nowhere.code, 1, "{}", nowhere.stdout);
    assert!(
        nowhere.stderr.contains("not placed") && nowhere.stderr.contains("pgtenant apply"),
        "{}",
        nowhere.stderr
    );
    // Headroom counts the connections in use: a new dev tenant goes to c (no limit, a holds 1 of
    // its maxTenants 5), unless c's server is busier than that.
    let with_five = format!(
        "{V1}  - name: one\n    cluster: c\n    environment: dev\n  - name: two\n    environment: production\n  - name: three\n    environment: dev\n  - name: five\n    environment: dev\n"
    );
    fleet.write(&with_five);
    let placed = |json: &Value| tenant(json, "team/five")["cluster"].clone();
    let plan = fleet.run(&["plan", "--format", "json"]).json();
    assert_eq!(placed(&plan), "c", "{plan:#}");
    let usable = cluster(&plan, "c")["headroom"]["usable_connections"]
        .as_u64()
        .unwrap();
    assert!(usable > 50, "{plan:#}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Two fifths of c's connections: fuller than a's one fifth of tenants.
    let held: Vec<_> = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..usable * 2 / 5 + 1 {
            held.push(fleet.clusters[2].superuser(None).await);
        }
        held
    });
    let busy = fleet.run(&["plan", "--format", "json"]).json();
    assert_eq!(placed(&busy), "a", "{busy:#}");
    assert!(
        cluster(&busy, "c")["headroom"]["connections"]
            .as_u64()
            .unwrap()
            > usable * 2 / 5,
        "{busy:#}"
    );
    drop(held);
    drop(rt);

    // Drift on one cluster (a changed declaration not applied yet): exit 2, the others in sync.
    fleet.write(&format!(
        "{V1}  - name: one\n    cluster: c\n    environment: dev\n  - name: two\n    environment: production\n    connectionLimit: 7\n  - name: three\n    environment: dev\n"
    ));
    let check = fleet.run(&["check", "--format", "json"]);
    assert_eq!(check.code, 2, "{}\n{}", check.stdout, check.stderr);
    let json = check.json();
    assert_eq!(json["in_sync"], false, "{json:#}");
    assert_eq!(tenant(&json, "team/two")["status"], "drift", "{json:#}");
    assert_eq!(tenant(&json, "team/three")["status"], "in-sync", "{json:#}");
    assert_eq!(cluster(&json, "b")["in_sync"], false, "{json:#}");
    assert_eq!(cluster(&json, "a")["in_sync"], true, "{json:#}");

    // Sticky: `two` would now go to a dev cluster; it stays on b, reported.
    fleet.write(&format!(
        "{V1}  - name: one\n    cluster: c\n    environment: dev\n  - name: two\n    environment: dev\n  - name: three\n    environment: dev\n"
    ));
    let plan = fleet.run(&["plan", "--format", "json"]);
    let json = plan.json();
    let two = tenant(&json, "team/two");
    assert_eq!(
        (&two["cluster"], &two["state"]),
        (&"b".into(), &"existing".into()),
        "{json:#}"
    );
    assert!(
        two["would_place"] == "a" || two["would_place"] == "c",
        "{json:#}"
    );
    let reported = json["placement"].as_array().unwrap();
    assert_eq!(reported.len(), 1, "{json:#}");
    let text = fleet.run(&["plan"]);
    assert!(
        text.stdout.contains("placement is sticky"),
        "{}",
        text.stdout
    );
    let apply = fleet.run(&["apply"]);
    assert_eq!(apply.code, 0, "{}\n{}", apply.stdout, apply.stderr);
    assert_eq!(fleet.tenants_on("b"), ["team/two"]);
    assert!(fleet.tenants_on("a").len() + fleet.tenants_on("c").len() == 2);

    // The same tenant on two clusters (made behind the fleet's back, with a direct admin URL):
    // reported with both names, nothing dropped on either.
    let a_url = fleet.clusters[0].admin_url();
    // (It fails on the shared credential store, which names b's endpoint; the database is made.)
    fleet.run(&["--admin-url", &a_url, "apply", "--tenant", "team/two"]);
    assert!(fleet.tenants_on("a").contains(&"team/two".to_owned()));
    let plan = fleet.run(&["plan", "--format", "json"]);
    assert_eq!(plan.code, 1, "{}\n{}", plan.stdout, plan.stderr);
    let json = plan.json();
    let two = tenant(&json, "team/two");
    assert_eq!(two["state"], "duplicate", "{json:#}");
    assert_eq!(two["found_on"], serde_json::json!(["a", "b"]), "{json:#}");
    assert!(!plan.stdout.contains("DROP"), "{}", plan.stdout);
    let a = cluster(&json, "a");
    assert!(
        a["operations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|op| op["tenant"] != "team/two"),
        "{json:#}"
    );
    let text = fleet.run(&["apply"]);
    assert_eq!(text.code, 1, "{}\n{}", text.stdout, text.stderr);
    assert!(
        text.stdout.contains("duplicate: team/two") && text.stdout.contains("a, b"),
        "{}",
        text.stdout
    );
    assert!(fleet.tenants_on("a").contains(&"team/two".to_owned()));
    assert_eq!(fleet.tenants_on("b"), ["team/two"]);

    // c stops: `one` is unreachable, a new tenant is held, a and b still converge; exit 1.
    fleet.clusters[2].cluster.cluster.stop().unwrap();
    fleet.write(&format!(
        "{V1}  - name: one\n    cluster: c\n    environment: dev\n  - name: two\n    environment: dev\n    connectionLimit: 7\n  - name: three\n    environment: dev\n    connectionLimit: 9\n  - name: four\n"
    ));
    let apply = fleet.run(&["apply", "--format", "json"]);
    assert_eq!(apply.code, 1, "{}\n{}", apply.stdout, apply.stderr);
    let json = apply.json();
    let c = cluster(&json, "c");
    assert_eq!(c["reachable"], false, "{json:#}");
    assert!(
        c["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{json:#}"
    );
    assert_eq!(
        tenant(&json, "team/one")["state"],
        "unreachable",
        "{json:#}"
    );
    assert_eq!(tenant(&json, "team/one")["cluster"], "c", "{json:#}");
    assert_eq!(tenant(&json, "team/four")["state"], "held", "{json:#}");
    for name in ["a", "b"] {
        let member = cluster(&json, name);
        assert_eq!(
            (&member["reachable"], &member["failed"]),
            (&true.into(), &0.into()),
            "{json:#}"
        );
        // a converges `three`'s change; b holds only the duplicate `two`, left alone.
        if name == "a" {
            assert!(member["applied"].as_u64().unwrap() > 0, "{json:#}");
        }
    }
    // check and list with c down: c's tenant unreachable, exit 1, the others still reported.
    let check = fleet.run(&["check", "--format", "json"]);
    assert_eq!(check.code, 1, "{}\n{}", check.stdout, check.stderr);
    let json = check.json();
    assert_eq!(
        (
            &tenant(&json, "team/one")["status"],
            &tenant(&json, "team/one")["cluster"]
        ),
        (&"unreachable".into(), &"c".into()),
        "{json:#}"
    );
    assert_eq!(tenant(&json, "team/three")["cluster"], "a", "{json:#}");
    assert!(tenant(&json, "team/three")["roles"].is_array(), "{json:#}");
    assert_eq!(cluster(&json, "c")["reachable"], false, "{json:#}");
    let list = fleet.run(&["list", "--format", "json"]);
    assert_eq!(list.code, 1, "{}\n{}", list.stdout, list.stderr);
    let json = list.json();
    assert_eq!(cluster(&json, "c")["reachable"], false, "{json:#}");
    assert!(
        json["databases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["cluster"] == "a" && d["tenant"] == "team/three"),
        "{json:#}"
    );
    // The credentials of a tenant on the unreachable cluster: its recorded cluster's endpoint.
    let out = fleet.run(&[
        "credentials",
        "team/one",
        "--role",
        "read",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["port"], port_of(&fleet, 2), "{}", out.stdout);
    let with_c_down = fleet.run(&["--cluster", "a", "plan"]);
    assert!(
        !with_c_down.stdout.contains("DROP"),
        "{}",
        with_c_down.stdout
    );
    let _ = Path::new("");
}
