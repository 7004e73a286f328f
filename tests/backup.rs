//! Backups and point-in-time restore against the real thing: the embedded cluster with WAL
//! archiving on, real pgBackRest, pg_dump and pg_restore, through the binary.

mod backup_env;
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use backup_env::{note_the_time, BackupEnv};
use common::{connect, sqlstate, INSUFFICIENT_PRIVILEGE};
use tokio_postgres::Client;

/// Every row of `table`, as text, in a stable order: what "equal to the snapshot" compares.
async fn rows(client: &Client, table: &str) -> Vec<String> {
    client
        .query(
            &format!("SELECT t::text FROM {table} t ORDER BY t::text"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("reading {table}: {}", pgtenant_engine::error_chain(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn last_value(client: &Client, sequence: &str) -> i64 {
    client
        .query_one(&format!("SELECT last_value FROM {sequence}"), &[])
        .await
        .unwrap()
        .get(0)
}

async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Postgres processes (a scratch server) whose command line mentions `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}

#[tokio::test]
async fn point_in_time_restore_in_place_and_into_another_tenant() {
    let env = BackupEnv::new();
    env.declare("shop", "cart");
    env.declare("shop", "orders");
    env.ok(&["apply"]);
    let backup = env.ok(&["backup", "run", "--type", "full", "--format", "json"]);
    let backup = backup.json();
    assert_eq!(backup["backup"]["type"], "full", "{backup}");
    // Right after the first backup the window is not one that ends before it starts; times are
    // RFC 3339 in JSON and one human format in text.
    let listing = env.ok(&["backup", "list", "--format", "json"]).json();
    let window = &listing["window"];
    let (earliest, latest) = (
        window["earliest"].as_str().unwrap(),
        window["latest"].as_str().unwrap(),
    );
    assert!(earliest <= latest, "{window}");
    for time in [
        earliest,
        latest,
        listing["physical"][0]["finished"].as_str().unwrap(),
    ] {
        assert!(
            time.len() == 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
            "{time} is RFC 3339 in UTC"
        );
    }
    let text = env.ok(&["backup", "list"]).stdout;
    let human = earliest.replace('T', " ").replace('Z', " UTC");
    assert!(text.contains(&human), "{text}");
    assert!(!text.contains("+00"), "{text}");

    let admin = env.connect_as("shop/cart", "admin").await;
    admin
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
             CREATE TABLE prices (item int REFERENCES items, cents bigint);
             CREATE SEQUENCE invoice_no START 1000;
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;
             INSERT INTO prices SELECT g, g * 100 FROM generate_series(1, 500) g;
             SELECT nextval('invoice_no'), nextval('invoice_no');",
        )
        .await
        .unwrap();
    let orders_admin = env.connect_as("shop/orders", "admin").await;
    orders_admin
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY);
             INSERT INTO orders SELECT generate_series(1, 5);",
        )
        .await
        .unwrap();
    let snapshot = (rows(&admin, "items").await, rows(&admin, "prices").await);
    let invoice_no = last_value(&admin, "invoice_no").await;

    let t = note_the_time(&admin).await;

    // The damage, and more writes, after the noted time.
    let write = env.connect_as("shop/cart", "write").await;
    write
        .batch_execute(
            "UPDATE prices SET cents = 0;
             INSERT INTO items VALUES (9999, 'after the noted time');
             SELECT nextval('invoice_no');",
        )
        .await
        .unwrap();
    admin
        .batch_execute(
            "DROP TABLE prices; CREATE TABLE made_later (x int); INSERT INTO made_later VALUES (1);",
        )
        .await
        .unwrap();
    // Regression: more than a WAL segment written after the noted time gets segments archived
    // after it that hold no commit past it; recovery must still find one.
    write
        .batch_execute(
            "INSERT INTO items SELECT g, (SELECT string_agg(md5(g::text || i::text), '') \
             FROM generate_series(1, 64) i) FROM generate_series(100000, 120000) g;",
        )
        .await
        .unwrap();
    let orders_write = env.connect_as("shop/orders", "write").await;
    orders_write
        .batch_execute("INSERT INTO orders SELECT generate_series(6, 10);")
        .await
        .unwrap();

    // A time outside the window: a clear error, nothing changed.
    let out = env.run(&[
        "restore",
        "shop/cart",
        "--time",
        "2001-01-01 00:00:00+00",
        "--yes",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("outside the restorable window")
            && out.stderr.contains("nothing was changed"),
        "{}",
        out.stderr
    );
    assert_eq!(count(&admin, "made_later").await, 1);
    assert_eq!(count(&admin, "items").await, 20502);

    let out = env.ok(&[
        "restore",
        "shop/cart",
        "--time",
        &t,
        "--yes",
        "--format",
        "json",
    ]);
    let report = out.json();
    assert_eq!(report["in_place"], true, "{report}");
    assert_eq!(report["single_database"], true, "{report}");
    assert_eq!(report["steps"].as_array().unwrap().len(), 4, "{report}");

    // Exactly the snapshot: dropped table back, bad update and later rows gone, later table gone.
    let admin = env.connect_as("shop/cart", "admin").await;
    assert_eq!(
        (rows(&admin, "items").await, rows(&admin, "prices").await),
        snapshot
    );
    // Recovery sets a sequence to the value its WAL logged ahead of the last nextval (up to 32
    // more, as after any crash): never lower than at the target, so no number is handed out twice.
    let restored_no = last_value(&admin, "invoice_no").await;
    assert!(
        (invoice_no..=invoice_no + 32).contains(&restored_no),
        "{invoice_no} then {restored_no}"
    );
    assert_eq!(
        sqlstate(&admin, "SELECT * FROM made_later")
            .await
            .as_deref(),
        Some("42P01"),
        "a table created after the target time is gone"
    );
    let owner: String = admin
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'prices'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "shop-cart-admin");

    // The other tenant's writes after the target time are still there.
    assert_eq!(count(&orders_admin, "orders").await, 10);

    // Roles and grants work: read reads and may not write, write writes.
    let read = env.connect_as("shop/cart", "read").await;
    assert_eq!(count(&read, "prices").await, 500);
    assert_eq!(
        sqlstate(&read, "INSERT INTO items VALUES (1000, 'x')")
            .await
            .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    let write = env.connect_as("shop/cart", "write").await;
    write
        .batch_execute("INSERT INTO items VALUES (1000, 'x'); DELETE FROM items WHERE id = 1000; SELECT nextval('invoice_no');")
        .await
        .unwrap();
    assert_eq!(
        env.ok(&["plan"]).code,
        0,
        "restore left nothing for apply to do"
    );

    // Into another declared tenant database.
    env.declare("shop", "cart-restored");
    env.ok(&["apply"]);
    let out = env.ok(&[
        "restore",
        "shop/cart",
        "--time",
        &t,
        "--into",
        "shop/cart-restored",
        "--yes",
    ]);
    assert!(out.stdout.contains("shop-cart-restored"), "{}", out.stdout);
    let restored_read = env.connect_as("shop/cart-restored", "read").await;
    assert_eq!(rows(&restored_read, "items").await, snapshot.0);
    assert_eq!(rows(&restored_read, "prices").await, snapshot.1);
    let restored_write = env.connect_as("shop/cart-restored", "write").await;
    restored_write
        .batch_execute("UPDATE prices SET cents = cents + 1 WHERE item = 1")
        .await
        .unwrap();
    let restored_admin = env.connect_as("shop/cart-restored", "admin").await;
    let foreign_grants: i64 = restored_admin
        .query_one(
            "SELECT count(*) FROM information_schema.role_table_grants \
             WHERE grantee IN ('shop-cart-read', 'shop-cart-write', 'shop-cart-admin')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        foreign_grants, 0,
        "no privilege of the source tenant's roles"
    );
    // The source tenant's roles still cannot reach the copy.
    let cart_read = env
        .uri("shop/cart", "read")
        .replace("/shop-cart?", "/shop-cart-restored?");
    let Err(err) = connect(&cart_read, None).await else {
        panic!("the source tenant's read role reached the copy");
    };
    assert!(err.contains("permission denied"), "{err}");

    let listing = env.ok(&["backup", "list", "--format", "json"]).json();
    assert_eq!(
        listing["physical"].as_array().unwrap().len(),
        1,
        "{listing}"
    );
    assert!(listing["window"]["earliest"].is_string(), "{listing}");
    assert_eq!(listing["rpo_seconds"], 60);
    let restores = listing["restores"].as_array().unwrap();
    assert_eq!(restores.len(), 2, "{listing}");
    assert!(restores.iter().all(|r| r["ok"] == true), "{listing}");
    assert!(env.scratch_dir().read_dir().unwrap().next().is_none());
}

#[tokio::test]
async fn killed_restore_leaves_the_live_database_and_no_scratch_cluster() {
    let env = BackupEnv::new();
    env.declare("shop", "cart");
    env.ok(&["apply"]);
    let admin = env.connect_as("shop/cart", "admin").await;
    admin
        .batch_execute(
            "CREATE TABLE prices (item int PRIMARY KEY, cents bigint);
             INSERT INTO prices SELECT g, g * 100 FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    env.ok(&["backup", "run", "--environment", "production"]);
    // The first backup run restarts the embedded cluster once, to turn on WAL archiving.
    let admin = env.connect_as("shop/cart", "admin").await;
    let snapshot = rows(&admin, "prices").await;
    let t = note_the_time(&admin).await;
    admin
        .batch_execute("UPDATE prices SET cents = -1")
        .await
        .unwrap();
    let damaged = rows(&admin, "prices").await;

    // Killed while dumping from the scratch cluster (step 2).
    let mut child = env
        .command()
        .args(["restore", "shop/cart", "--time", &t, "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("the restore ended before step 2:\n{seen}");
        }
        seen.push_str(&line);
        if line.starts_with("[2/4]") {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    assert_eq!(
        rows(&admin, "prices").await,
        damaged,
        "the live database is untouched"
    );
    // The scratch server died with its parent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_under(&env.scratch_dir()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "scratch server still running: {:?}",
            processes_under(&env.scratch_dir())
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The next run cleans up and restores.
    let out = env.ok(&["restore", "shop/cart", "--time", &t, "--yes"]);
    assert!(
        out.stderr.contains("left behind by an interrupted run"),
        "{}",
        out.stderr
    );
    assert!(
        env.scratch_dir().read_dir().unwrap().next().is_none(),
        "no scratch cluster left"
    );
    let admin = env.connect_as("shop/cart", "admin").await;
    assert_eq!(rows(&admin, "prices").await, snapshot);

    // Every backup verifiable: the newest physical one restores and reads completely.
    let verified = env.ok(&["backup", "verify", "--format", "json"]).json();
    assert_eq!(verified["ok"], true, "{verified}");
    let cart = verified["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "shop-cart")
        .cloned()
        .unwrap_or_else(|| panic!("{verified}"));
    assert_eq!(cart["readable"], true);
    assert_eq!(cart["tables"], 1);

    // A logical backup of one tenant, restored with --backup.
    let logical = env.ok(&["backup", "shop/cart", "--format", "json"]).json();
    let id = logical["id"].as_str().unwrap().to_string();
    assert_eq!(logical["tenant"], "shop/cart");
    assert_eq!(logical["sha256"].as_str().unwrap().len(), 64);
    assert!(
        logical["server_version"]
            .as_str()
            .unwrap()
            .starts_with("15"),
        "{logical}"
    );
    admin
        .batch_execute("DELETE FROM prices WHERE item > 10")
        .await
        .unwrap();
    let out = env.ok(&["restore", "shop/cart", "--backup", &id, "--yes"]);
    // An in-place restore ends the sessions on the database, with a warning.
    assert!(
        out.stderr.contains("terminated 1 open session"),
        "{}",
        out.stderr
    );
    let admin = env.connect_as("shop/cart", "admin").await;
    assert_eq!(rows(&admin, "prices").await, snapshot);
    let verified = env
        .ok(&["backup", "verify", &id, "--format", "json"])
        .json();
    assert_eq!(verified["ok"], true, "{verified}");

    // Production retention was remembered; expire keeps what is inside it.
    let listing = env
        .ok(&["backup", "list", "shop/cart", "--format", "json"])
        .json();
    assert_eq!(listing["retention"]["days"], 35, "{listing}");
    assert_eq!(listing["logical"].as_array().unwrap().len(), 1);
    let expired = env.ok(&["backup", "expire", "--format", "json"]).json();
    assert_eq!(
        expired["physical"].as_array().unwrap().len(),
        0,
        "{expired}"
    );
    assert_eq!(expired["logical"].as_array().unwrap().len(), 0, "{expired}");
}

#[test]
fn restore_refuses_before_touching_anything() {
    let env = BackupEnv::new();
    env.declare("shop", "cart");
    let out = env.run(&[
        "restore",
        "shop/cart",
        "--time",
        "2025-06-01 12:00:00",
        "--yes",
    ]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("a zone"), "{}", out.stderr);
    let out = env.run(&[
        "restore",
        "shop/cart",
        "--time",
        "2025-06-01 12:00:00+00",
        "--into",
        "shop/nope",
        "--yes",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("shop/nope is not declared"),
        "{}",
        out.stderr
    );
    let out = env.run(&["restore", "shop/cart", "--time", "2025-06-01 12:00:00+00"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    let out = env.run(&["backup"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("backup run"), "{}", out.stderr);
    assert!(
        !env.state.path().join("cluster").exists(),
        "no cluster was created"
    );
}

/// A cluster given with --admin-url and no pgBackRest setup: a logical backup is pg_dump alone,
/// and so are its catalog, its verification and its restore.
#[tokio::test]
async fn logical_backups_of_a_cluster_given_by_url_need_no_pgbackrest() {
    let env = common::Env::new();
    env.declare("shop", "cart", &[("cart", "standard")]);
    env.apply();
    let admin = env.connect_as("shop/cart", "admin").await;
    admin
        .batch_execute(
            "CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 10)",
        )
        .await
        .unwrap();
    let out = env.run(&["backup", "shop/cart", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.json()["id"].as_str().unwrap().to_string();
    admin.batch_execute("DELETE FROM items").await.unwrap();

    let out = env.run(&["restore", "shop/cart", "--backup", &id, "--yes"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let admin = env.connect_as("shop/cart", "admin").await;
    assert_eq!(count(&admin, "items").await, 10);

    let out = env.run(&["backup", "list", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listing = out.json();
    assert!(listing["stanza"].is_null(), "{listing}");
    assert_eq!(listing["logical"].as_array().unwrap().len(), 1, "{listing}");
    assert_eq!(listing["restores"][0]["ok"], true, "{listing}");
    let out = env.run(&["backup", "list"]);
    assert!(
        out.stdout.contains("logical backups only"),
        "{}",
        out.stdout
    );
    let out = env.run(&["backup", "verify", &id, "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["ok"], true);
    assert_eq!(env.run(&["backup", "expire"]).code, 0);

    // What does need pgBackRest says what to give.
    for args in [
        &["backup", "run"][..],
        &[
            "restore",
            "shop/cart",
            "--time",
            "2025-06-01 12:00:00+00",
            "--yes",
        ],
    ] {
        let out = env.run(args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("--pgbackrest-config") && out.stderr.contains("--stanza"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

/// `restore --into` goes only into an empty database of the same namespace that is not protected,
/// unless told otherwise; each refusal names the rule and the flag, and changes nothing.
#[tokio::test]
async fn restore_into_refuses_another_namespace_a_protected_or_a_non_empty_database() {
    let env = common::Env::new();
    env.declare("shop", "cart", &[("cart", "standard")]);
    env.declare("shop", "copy", &[("copy", "standard")]);
    env.declare("shop", "used", &[("used", "standard")]);
    env.declare("shop", "vault", &[("vault", "protected")]);
    env.declare("other", "x", &[("x", "standard")]);
    env.apply();
    let admin = env.connect_as("shop/cart", "admin").await;
    admin
        .batch_execute("CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2), (3)")
        .await
        .unwrap();
    let used = env.connect_as("shop/used", "admin").await;
    used.batch_execute("CREATE TABLE own (x int); INSERT INTO own VALUES (7)")
        .await
        .unwrap();
    let out = env.run(&["backup", "shop/cart", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let id = out.json()["id"].as_str().unwrap().to_string();
    let into = |target: &str, flags: &[&str]| {
        let mut args = vec![
            "restore",
            "shop/cart",
            "--backup",
            &id,
            "--yes",
            "--into",
            target,
        ];
        args.extend_from_slice(flags);
        env.run(&args)
    };

    for (target, rule, flag) in [
        ("other/x", "same namespace", "--allow-cross-namespace"),
        ("shop/vault", "protected", "--replace"),
        ("shop/used", "table public.own", "--replace"),
    ] {
        let out = into(target, &[]);
        assert_eq!(out.code, 1, "into {target}: {}", out.stderr);
        assert!(
            out.stderr.contains(rule) && out.stderr.contains(flag),
            "into {target}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
    }
    for (tenant, table) in [
        ("shop/vault", "items"),
        ("shop/used", "items"),
        ("other/x", "items"),
    ] {
        let client = env.connect_as(tenant, "admin").await;
        assert_eq!(
            sqlstate(&client, &format!("SELECT * FROM {table}"))
                .await
                .as_deref(),
            Some("42P01"),
            "{tenant} was not touched"
        );
    }
    // A protected database is refused even when empty; --replace is the explicit yes.
    let out = into("shop/vault", &["--replace"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // An empty database of the same namespace: no flag needed.
    let out = into("shop/copy", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let read = env.connect_as("shop/copy", "read").await;
    assert_eq!(count(&read, "items").await, 3);

    // --replace merges into a database with objects: same-named ones replaced, others kept.
    let out = into("shop/used", &["--replace"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&used, "items").await, 3);
    assert_eq!(count(&used, "own").await, 1);

    let out = into("other/x", &["--allow-cross-namespace"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let read = env.connect_as("other/x", "read").await;
    assert_eq!(count(&read, "items").await, 3);
}

/// A `.dump.partial` final backup left by a killed run is removed by the next `trash list` or run
/// taking final backups, but not while a run taking final backups is under way (it may be
/// that run's own dump).
#[tokio::test]
async fn unfinished_final_backups_left_in_the_trash_are_removed() {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let env = common::Env::new();
    env.declare("shop", "cart", &[("cart", "standard")]);
    // Not an empty repo once cart is gone, which would hold the drop.
    env.declare("shop", "other", &[("other", "standard")]);
    env.apply();
    let trash = env.state_path().join("trash");
    let leftover = trash.join("shop/old/2026-01-01T000000Z.dump.partial");
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    std::fs::write(&leftover, "half a dump").unwrap();

    // A run dumping now holds the trash lock shared: its partial file is left alone.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(trash.join("trash.lock"))
        .unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockShared).unwrap();
    let out = env.run(&["trash", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(leftover.exists(), "removed while a run may be writing it");
    drop(held);

    let out = env.run(&["trash", "list", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json(), serde_json::json!([]));
    assert!(!leftover.exists(), "left behind by a killed run");

    // At the start of taking final backups, too.
    std::fs::write(&leftover, "half a dump").unwrap();
    env.remove("shop/cart/values.yaml");
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("removed 1 unfinished final backup"),
        "{}",
        out.stderr
    );
    assert!(!leftover.exists());
    let listed = env.run(&["trash", "list", "--format", "json"]).json();
    assert_eq!(listed[0]["tenant"], "shop/cart", "{listed}");
    let dropped = listed[0]["dropped_at"].as_str().unwrap();
    let dump = std::path::PathBuf::from(listed[0]["file"].as_str().unwrap());
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dump), 0o600, "the tenant's data is private");
    // A dump an earlier version left readable is made private.
    std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = env.run(&["trash", "list"]).stdout;
    assert_eq!(mode(&dump), 0o600);
    assert!(
        text.contains(&dropped.replace('T', " ").replace('Z', " UTC")),
        "one human time format in text: {text}"
    );
}
