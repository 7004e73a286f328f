//! The embedded-cluster environment of the backup tests (tests/backup.rs, tests/file_modes.rs):
//! pgtenant with no admin URL, so that pgBackRest, WAL archiving and scratch clusters are real.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use assert_cmd::cargo::CommandCargoExt;
use tempfile::TempDir;
use tokio_postgres::Client;

use crate::common::{connect, poll_until, Output};

/// pgtenant on its own embedded cluster (no admin URL), in a temporary state dir and apps repo.
pub struct BackupEnv {
    pub state: TempDir,
    pub repo: TempDir,
}

impl BackupEnv {
    pub fn new() -> Self {
        let state = tempfile::Builder::new()
            .prefix("pgtenant-backup-test-")
            .tempdir()
            .unwrap();
        // As root the server (and pgBackRest) run as another OS user, which must get through.
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        BackupEnv {
            state,
            repo: tempfile::tempdir().unwrap(),
        }
    }

    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::cargo_bin("pgtenant").unwrap();
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PGTENANT_STATE_DIR", self.state.path())
            .current_dir(self.repo.path());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let output = self.command().args(args).output().unwrap();
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.code, 0,
            "pgtenant {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out
    }

    pub fn declare(&self, namespace: &str, name: &str) {
        let dir = self.repo.path().join(namespace).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("values.yaml"),
            format!("postgresqlDatabases:\n  - name: {name}\n"),
        )
        .unwrap();
    }

    pub fn uri(&self, tenant: &str, role: &str) -> String {
        let out = self.ok(&["credentials", tenant, "--role", role, "--format", "json"]);
        out.json()["uri"].as_str().unwrap().to_string()
    }

    pub async fn connect_as(&self, tenant: &str, role: &str) -> Client {
        connect(&self.uri(tenant, role), None)
            .await
            .unwrap_or_else(|e| panic!("{role} of {tenant} cannot connect: {e}"))
    }

    pub fn scratch_dir(&self) -> PathBuf {
        self.state.path().join("backups/scratch")
    }
}

impl Drop for BackupEnv {
    fn drop(&mut self) {
        let _ = self.command().arg("down").output();
    }
}

/// A whole second of the server's clock strictly between what was written before and after:
/// the next whole second `T` after now (so everything written so far is earlier), returned once
/// the server's clock has passed `T + 1 s` (so everything written next is later than that).
/// Polled rather than slept for; the second itself is what restores to a point in time need,
/// as pgBackRest records backup times in whole seconds.
pub async fn note_the_time(client: &Client) -> String {
    let row = client
        .query_one(
            "SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00', \
                    (t + interval '1 second')::text \
               FROM (SELECT date_trunc('second', clock_timestamp()) + interval '1 second' AS t) s",
            &[],
        )
        .await
        .unwrap();
    let (time, after): (String, String) = (row.get(0), row.get(1));
    poll_until(&format!("the server's clock to pass {after}"), || async {
        client
            .query_one(
                "SELECT clock_timestamp() > $1::text::timestamptz",
                &[&after],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
    })
    .await;
    time
}
