//! `state.json` in the pooler's directory (0600, the invoking user only): the admin console's
//! password and the SCRAM verifiers pgtenant knows the server holds for each tenant login.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};

use crate::PoolerError;

pub const STATE_FILE: &str = "state.json";

/// Deliberately not `Debug`: it holds the admin password.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub admin_password: String,
    /// Login → the verifier the server has for it, as pgtenant set it
    /// ([`pgtenant_engine::scram_verifier`]); the auth file lists exactly these.
    #[serde(default)]
    pub verifiers: BTreeMap<String, String>,
    /// Login → [`pgtenant_engine::password_digest`] of the stored password its recorded verifier
    /// was made from: a sync recomputes a verifier only when the password changed.
    #[serde(default)]
    pub digests: BTreeMap<String, String>,
    /// Login → the tenant (`NS/DB`) it was last synced for: a sync scoped to some tenants
    /// replaces only their logins and keeps every other one as this file has it. A login not
    /// recorded here (a state from before) is kept by a scoped sync until a full one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, String>,
    /// The key of those digests, random, never leaves this file.
    #[serde(default = "random_secret")]
    pub digest_key: String,
    /// The primary pool entries point at instead of the configured server, after
    /// [`crate::Pooler::follow_primary`]; None: the configured server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<Followed>,
    /// `auth: query`: the lookup login's password as the auth file holds it (pgbouncer's
    /// `auth_user` logs in to the server with it), and [`pgtenant_engine::scram_verifier`] of it,
    /// which the server was given; the secret store keeps the password itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<Lookup>,
}

/// The lookup login as the last sync left it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lookup {
    pub password: String,
    pub verifier: String,
}

/// A followed primary, and the configured server it stands in for: once the configuration names
/// another server, that one wins again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Followed {
    /// The configured server (`host:port`) when the primary was followed.
    pub configured: String,
    pub host: String,
    pub port: u16,
}

impl Followed {
    pub fn configured(host: &str, port: u16) -> String {
        format!("{host}:{port}")
    }
}

fn random_secret() -> String {
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 40)
}

impl State {
    /// The state in `dir`, created (with a fresh admin password) the first time.
    pub fn load_or_create(dir: &Path) -> Result<Self, PoolerError> {
        let path = dir.join(STATE_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| PoolerError::State {
                path: path.clone(),
                // Only the position: the message could quote a password.
                reason: format!("unreadable (line {}, column {})", e.line(), e.column()),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let state = State {
                    admin_password: random_secret(),
                    verifiers: BTreeMap::new(),
                    digests: BTreeMap::new(),
                    tenants: BTreeMap::new(),
                    digest_key: random_secret(),
                    primary: None,
                    lookup: None,
                };
                state.save(dir)?;
                Ok(state)
            }
            Err(e) => Err(PoolerError::io(&path, e)),
        }
    }

    /// The state in `dir` when there is one (nothing is created).
    pub fn load(dir: &Path) -> Result<Option<Self>, PoolerError> {
        if !dir.join(STATE_FILE).exists() {
            return Ok(None);
        }
        Self::load_or_create(dir).map(Some)
    }

    pub fn save(&self, dir: &Path) -> Result<(), PoolerError> {
        let json = serde_json::to_vec_pretty(self).expect("state serializes");
        crate::files::write_if_changed(&dir.join(STATE_FILE), &json, None).map(drop)
    }
}
