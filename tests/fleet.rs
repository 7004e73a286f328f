//! A fleet of three real clusters in one config (docs/fleet.md): placement by explicit cluster,
//! by label (the tier of the environment) and by headroom; sticky after a change (reported, not
//! moved); one cluster stopped → its tenants unreachable, the others converge, exit 1.

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
            ("a", "labels: {tier: dev}\n    capacity: {maxTenants: 5}"),
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

fn tenant<'v>(json: &'v Value, id: &str) -> &'v Value {
    json["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == id)
        .unwrap_or_else(|| panic!("{id} not in {json:#}"))
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
    let apply = fleet.run(&["apply"]);
    assert_eq!(apply.code, 0, "{}\n{}", apply.stdout, apply.stderr);
    assert_eq!(fleet.tenants_on("a"), ["team/three"]);
    assert_eq!(fleet.tenants_on("b"), ["team/two"]);
    assert_eq!(fleet.tenants_on("c"), ["team/one"]);
    let again = fleet.run(&["plan"]);
    assert_eq!(
        again.code, 0,
        "converged:\n{}\n{}",
        again.stdout, again.stderr
    );

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
    let a = json["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "a")
        .unwrap();
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
    let c = json["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "c")
        .unwrap();
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
        let cluster = json["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        assert_eq!(
            (&cluster["reachable"], &cluster["failed"]),
            (&true.into(), &0.into()),
            "{json:#}"
        );
        // a converges `three`'s change; b holds only the duplicate `two`, left alone.
        if name == "a" {
            assert!(cluster["applied"].as_u64().unwrap() > 0, "{json:#}");
        }
    }
    let with_c_down = fleet.run(&["--cluster", "a", "plan"]);
    assert!(
        !with_c_down.stdout.contains("DROP"),
        "{}",
        with_c_down.stdout
    );
    let _ = Path::new("");
}
