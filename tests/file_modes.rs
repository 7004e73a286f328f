//! Nothing pgtenant writes under its state dir is readable by other local users: every file 0600,
//! every directory 0700, through backups, a point-in-time restore (while its scratch cluster
//! exists and after), the final backup of a dropped database and an export. Against the real
//! embedded cluster, real pgBackRest, pg_dump and pg_restore.

mod backup_env;
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use backup_env::{note_the_time, BackupEnv};

/// Directories the server's OS account must pass through to reach what it owns below them, when
/// we are root and the server runs as another account (`postgres`, else `nobody`). They may have
/// the search bit for group and others (0711), never read or write. Relative to the state dir.
/// - the state dir itself: the server reaches `cluster/` and `backups/` through it;
/// - `cluster`: the embedded server's data, log and socket directories are in it;
/// - `backups`: pgBackRest (run as the server's account, also by the server's archive_command)
///   reads `pgbackrest.conf` and writes `repo/`, `log/` and `lock/` in it;
/// - `backups/scratch`: the scratch server's own directory (0700, its account) is in it.
const TRAVERSED_BY_THE_SERVER: [&str; 4] = ["", "cluster", "backups", "backups/scratch"];

/// Files meant for every local account: the embedded cluster's CA certificate, which clients of
/// any account verify the server with (`sslrootcert` of exported credentials).
const PUBLIC: [&str; 1] = ["cluster/ca.crt"];

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Everything under `root` (symlinks and sockets aside) that is group/other accessible beyond
/// what [`TRAVERSED_BY_THE_SERVER`] allows, as `mode path` lines.
fn exposed(root: &Path, state: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // removed while we looked (a scratch data directory being discarded)
        };
        let mode = meta.permissions().mode() & 0o7777;
        let kind = meta.file_type();
        let relative = path.strip_prefix(state).unwrap_or(&path).to_path_buf();
        if kind.is_dir() {
            let traversed = running_as_root()
                && TRAVERSED_BY_THE_SERVER
                    .iter()
                    .any(|allowed| relative == Path::new(allowed));
            let allowed = if traversed { 0o011 } else { 0 };
            if mode & 0o077 & !allowed != 0 {
                found.push(format!("{mode:o} {}/ (uid {})", path.display(), meta.uid()));
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if kind.is_file()
            && mode & 0o077 != 0
            && !PUBLIC.contains(&&*relative.to_string_lossy())
        {
            found.push(format!("{mode:o} {} (uid {})", path.display(), meta.uid()));
        }
    }
    found.sort();
    found
}

#[track_caller]
fn assert_private(env: &BackupEnv, when: &str) {
    let state = env.state.path();
    let found = exposed(state, state);
    assert!(
        found.is_empty(),
        "{when}: readable by other users:\n{}",
        found.join("\n")
    );
}

fn files_named(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(name))
            {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn every_file_under_the_state_dir_is_private() {
    let env = BackupEnv::new();
    // Only what the server's account needs to get through (the directory is the test's own).
    let mode = if running_as_root() { 0o711 } else { 0o700 };
    std::fs::set_permissions(env.state.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    env.declare("shop", "cart");
    env.declare("shop", "gone");
    env.ok(&["apply"]);
    assert_private(&env, "after apply");

    env.ok(&["backup", "run", "--type", "full"]);
    assert_private(&env, "after backup run");

    let admin = env.connect_as("shop/cart", "admin").await;
    admin
        .batch_execute(
            "CREATE TABLE secrets (id int PRIMARY KEY, card text);
             INSERT INTO secrets SELECT g, 'card ' || g FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    env.ok(&["backup", "shop/cart"]);
    assert_eq!(files_named(env.state.path(), ".dump").len(), 1);
    assert_private(&env, "after a logical backup");

    let t = note_the_time(&admin).await;
    admin.batch_execute("DELETE FROM secrets").await.unwrap();

    // Stopped right after the dump from the scratch cluster: the scratch directory holds the
    // tenant's data as it was at the target time, and the scratch server's files.
    let out = env
        .command()
        .args(["restore", "shop/cart", "--time", &t, "--yes"])
        .env("PGTENANT_FAILPOINT", "restore:after-scratch-dump")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the failpoint stops the restore:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scratch = env.scratch_dir();
    let dumps = files_named(&scratch, "database.pgdump");
    assert_eq!(
        dumps.len(),
        1,
        "the failpoint is after the dump:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!files_named(&scratch, "server.log").is_empty());
    assert!(!files_named(&scratch, "pg_hba.conf").is_empty());
    assert_private(&env, "during a point-in-time restore");
    // Not a name another local user could guess from the tenant and the time.
    let name = dumps[0]
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let suffix = name.rsplit('-').next().unwrap();
    assert!(
        suffix.len() >= 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
        "scratch directory {name} ends in a random suffix"
    );

    env.ok(&["restore", "shop/cart", "--time", &t, "--yes"]);
    assert_private(&env, "after a point-in-time restore");
    let admin = env.connect_as("shop/cart", "admin").await;
    let restored: i64 = admin
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(restored, 100);

    std::fs::remove_file(env.repo.path().join("shop/gone/values.yaml")).unwrap();
    let out = env.ok(&["apply"]);
    assert!(
        out.stderr.contains("final backup of shop-gone"),
        "{}",
        out.stderr
    );
    assert_eq!(
        files_named(&env.state.path().join("trash"), ".dump").len(),
        1
    );
    assert_private(&env, "after the final backup of a dropped database");

    let out_dir = env.state.path().join("exported");
    env.ok(&[
        "export",
        "--format",
        "env",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(!files_named(&out_dir, ".env").is_empty());
    assert_private(&env, "after export --out");
}
