//! Logs: `--log-format json` with PGTENANT_LOG writes JSON lines on stderr and leaves stdout to the
//! command's own output; without PGTENANT_LOG stderr carries no log lines.

mod backup_env;
mod common;

use backup_env::BackupEnv;
use serde_json::Value;

/// Stops the embedded cluster even when an assertion fails midway.
struct Down<'a>(&'a BackupEnv);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.command().arg("down").output();
    }
}

#[test]
fn json_logs_go_to_stderr_and_stdout_stays_json() {
    let env = BackupEnv::new();
    env.ok(&["up"]);
    let _down = Down(&env);

    let output = env
        .command()
        .env("PGTENANT_LOG", "debug")
        .args(["--log-format", "json", "backup", "list", "--format", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let listing: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}"));
    assert!(listing["physical"].is_array(), "{listing}");
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {line}"))
        })
        .collect();
    // The pgBackRest call `backup list` makes, with its duration; times are RFC 3339 in UTC.
    let call = lines
        .iter()
        .find(|l| l["fields"]["message"] == "pgbackrest")
        .unwrap_or_else(|| panic!("no pgbackrest event on stderr:\n{stderr}"));
    assert_eq!(call["fields"]["command"], "info", "{call}");
    assert!(call["fields"]["seconds"].as_f64().is_some(), "{call}");
    assert_eq!(call["level"], "INFO", "{call}");
    let time = call["timestamp"].as_str().unwrap();
    assert!(
        time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time} is RFC 3339 in UTC"
    );

    // The same through the variable, in text: one human time format.
    let output = env
        .command()
        .env("PGTENANT_LOG", "info")
        .env("PGTENANT_LOG_FORMAT", "text")
        .args(["backup", "list", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("pgbackrest"))
        .unwrap_or_else(|| panic!("no pgbackrest line:\n{stderr}"));
    assert!(line.contains(" UTC ") && line.contains("INFO"), "{line}");
    serde_json::from_slice::<Value>(&output.stdout).expect("stdout stays JSON");

    // Without PGTENANT_LOG: warnings only, and pgtenant emits none, so stderr is as before.
    for format in ["json", "text"] {
        let output = env
            .command()
            .args(["--log-format", format, "backup", "list", "--format", "json"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "",
            "--log-format {format} without PGTENANT_LOG"
        );
        serde_json::from_slice::<Value>(&output.stdout).expect("stdout is JSON");
    }
}

#[test]
fn an_unknown_log_format_is_a_usage_error() {
    let env = BackupEnv::new();
    let output = env
        .command()
        .args(["--log-format", "yaml", "status"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("possible values: text, json"), "{stderr}");
}
