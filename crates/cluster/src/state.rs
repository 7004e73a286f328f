//! `cluster.json`: what pgtenant remembers about its cluster, including its passwords.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};

use crate::os_user::write_new_file;
use crate::ClusterError;

/// Deliberately not `Debug`: it holds passwords.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) port: u16,
    pub(crate) server_user: String,
    pub(crate) bin_dir: PathBuf,
    pub(crate) superuser_password: String,
    pub(crate) control_password: String,
    /// The pooler's port on 127.0.0.1, chosen the first time pgbouncer is started for the
    /// cluster and kept (clusters created before the pooler have none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pooler_port: Option<u16>,
    /// Set only once init has completed, so a failed init is never taken for a cluster.
    pub(crate) initialized: bool,
}

impl State {
    /// The state at `path`, or None if there is none yet.
    pub(crate) fn load(path: &Path) -> Result<Option<Self>, ClusterError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ClusterError::io(path, source)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ClusterError::State {
                path: path.to_path_buf(),
                // Only the position: serde_json's message can quote a value, maybe a password.
                reason: format!(
                    "unreadable cluster state (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            })
    }

    /// Replaces the state at `path` atomically, readable only by the invoking user.
    pub(crate) fn save(&self, path: &Path) -> Result<(), ClusterError> {
        let json = serde_json::to_vec_pretty(self).expect("state serializes");
        let tmp = path.with_extension("json.tmp");
        // A leftover from an interrupted save holds nothing we still need.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(ClusterError::io(&tmp, e)),
            _ => {}
        }
        write_new_file(&tmp, &json, 0o600, None)?;
        fs::rename(&tmp, path).map_err(|source| ClusterError::io(path, source))?;
        tracing::debug!(path = %path.display(), "cluster state saved");
        Ok(())
    }
}

/// A 40-character alphanumeric password from the OS's random source: about 238 bits, and
/// safe to embed in a URL without escaping.
pub(crate) fn random_password() -> String {
    Alphanumeric.sample_string(&mut OsRng, 40)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> State {
        State {
            port: 54321,
            server_user: "postgres".into(),
            bin_dir: "/usr/lib/postgresql/15/bin".into(),
            superuser_password: random_password(),
            control_password: random_password(),
            pooler_port: None,
            initialized: false,
        }
    }

    #[test]
    fn missing_state_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(State::load(&dir.path().join("cluster.json"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn save_then_load_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.json");
        let mut state = sample();
        state.save(&path).unwrap();
        state.initialized = true;
        state.save(&path).unwrap();
        assert!(State::load(&path).unwrap().unwrap() == state);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn corrupt_state_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.json");
        fs::write(&path, "{\"port\": 1").unwrap();
        match State::load(&path) {
            Err(ClusterError::State { path: p, .. }) => assert_eq!(p, path),
            _ => panic!("expected a State error"),
        }
    }

    #[test]
    fn passwords_are_long_random_and_alphanumeric() {
        let a = random_password();
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, random_password());
    }
}
