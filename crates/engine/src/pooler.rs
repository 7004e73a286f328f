//! The connection pooler's hook into the engine ([`PoolerSync`]) and the SCRAM verifiers the
//! engine sets, which the pooler must be able to recompute.
//!
//! pgbouncer passes a client's SCRAM login through to the server only when the verifier in its
//! `auth_file` is identical (same salt, same iterations) to the server's, and the control role
//! cannot read `pg_authid`. So every verifier pgtenant sets is a function of the role and the
//! password alone ([`scram_verifier`]): the salt is derived from both, and whoever holds the
//! stored password (the pooler's sync) recomputes exactly what the server has.

use std::collections::BTreeSet;

use async_trait::async_trait;
use pgtenant_secrets::CredentialStore;

use crate::execute::ApplyOutcome;
use crate::plan::{Action, Plan};
use crate::reconcile::Request;
use crate::{Connector, Desired};

/// The rounds of Hi() that derive a verifier's salt: fixed, whatever the verifier's own
/// iteration count (the platform config's `passwords.scramIterations`), so that a guess at a
/// password costs what it costs at PostgreSQL's default even for a verifier of few rounds
/// (see [`scram_verifier`]).
const SALT_ITERATIONS: u32 = pgtenant_secrets::DEFAULT_SCRAM_ITERATIONS;
/// Separates this use of SHA-256 from any other.
const SALT_DOMAIN: &[u8] = b"pgtenant SCRAM salt v2\0";

/// Brings the pooler in line with the declared tenants and the stored credentials, after every
/// apply and rotate. Provided by the pooler crate; the engine only calls it.
#[async_trait]
pub trait PoolerSync: Send + Sync {
    /// Returns what it changed (for the log), or why it could not; a failed sync does not undo
    /// the apply (the next run, or `check`, sees the pooler's drift).
    async fn sync(
        &self,
        connector: &Connector,
        desired: &Desired,
        store: &dyn CredentialStore,
    ) -> Result<Vec<String>, String>;

    /// [`Self::sync`] after an apply that touched only `scope`: a pooler may then read the
    /// credentials of the tenants in scope alone, and need not set again the verifiers the apply
    /// has just set. The default is the full sync.
    async fn sync_scoped(
        &self,
        connector: &Connector,
        desired: &Desired,
        store: &dyn CredentialStore,
        scope: &SyncScope,
    ) -> Result<Vec<String>, String> {
        let _ = scope;
        self.sync(connector, desired, store).await
    }

    /// Every pool pgbouncer has now (SHOW POOLS, SHOW STATS), for serve's `/metrics`; None:
    /// this pooler reports nothing.
    async fn pool_stats(&self) -> Option<Result<Vec<PoolStats>, String>> {
        None
    }
}

/// One tenant database's pool as pgbouncer reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    pub database: String,
    pub cl_active: i64,
    pub cl_waiting: i64,
    pub sv_active: i64,
    pub sv_idle: i64,
    /// The longest a client waits now, and the averages of SHOW STATS, in seconds.
    pub maxwait_seconds: f64,
    pub avg_wait_seconds: f64,
    pub avg_xact_seconds: f64,
    pub total_xact_count: i64,
}

/// What an apply touched, for [`PoolerSync::sync_scoped`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncScope {
    /// The tenants (`NS/DB`) whose logins may have changed, after a run scoped with `--tenant`
    /// (`--full` too: it verifies those tenants, and the Desired state of a scoped run may hold
    /// only them); None: every tenant (a full sync, as after an unscoped run or a drift pass,
    /// which may find what changed behind pgtenant's back).
    pub tenants: Option<BTreeSet<String>>,
    /// Logins whose password the apply set, to [`scram_verifier`] of the password now stored:
    /// the server has that verifier, so the pooler records it without setting it again.
    pub set_by_apply: BTreeSet<String>,
}

impl SyncScope {
    /// The scope of an apply of `request` that ran `plan` to `outcome`. A scoped run syncs only
    /// its tenants. A login counts as set by the apply only when
    /// its tenant ran every planned operation without error: after a failure the server may not
    /// have the stored password's verifier, and the sync sets it.
    pub fn after(request: &Request, plan: &Plan, outcome: &ApplyOutcome) -> Self {
        let complete: BTreeSet<&str> = outcome
            .tenants
            .iter()
            .filter(|t| t.error.is_none() && t.applied == t.planned)
            .map(|t| t.tenant.as_str())
            .collect();
        let set_by_apply = plan
            .operations
            .iter()
            .filter(|op| complete.contains(op.tenant.as_str()))
            .filter_map(|op| match &op.action {
                Action::SetPassword { role, .. } => Some(role.as_str().to_string()),
                _ => None,
            })
            .collect();
        SyncScope {
            tenants: (!request.scope.is_empty()).then(|| request.scope.clone()),
            set_by_apply,
        }
    }
}

/// The SCRAM-SHA-256 verifier pgtenant sets for `role` with `password` and `iterations` rounds
/// (a credential's [`pgtenant_secrets::Credential::scram_iterations`], or the platform's setting
/// for a password it sets now): PostgreSQL's format, with a 16-byte salt derived from the role
/// and the password. The same inputs always give the same verifier; a new password gives a new
/// salt, the same password with another count the same salt.
///
/// The server (and pgbouncer) send the salt to any client that starts a SCRAM login as the role,
/// before it has proven anything. A salt from one fast hash of the password would let anyone who
/// can reach the port test guesses offline at hash speed, so the salt is itself Hi() over
/// [`SALT_ITERATIONS`] rounds, whatever `iterations` is: a guess then costs at least what it costs
/// against a stolen verifier of the default count. (pgtenant's passwords are 40 random
/// alphanumerics, about 238 bits, out of reach either way.)
///
/// Passwords are used as bytes, without SASLprep: that is what the server does with a password
/// SASLprep leaves unchanged, which every ASCII password without control characters is.
pub fn scram_verifier(role: &str, password: &str, iterations: u32) -> String {
    Recent::verifier(role, password, iterations)
}

/// The verifiers this process computed last, by role and a keyed digest of the password: the
/// apply computes a tenant login's verifier to set it, and the pooler's sync right after needs the
/// same one for its auth file. A hit costs one HMAC instead of two runs of Hi(). Keyed by
/// a random per-process secret (no key, no memo), so what it holds is no guessing oracle; never
/// more than [`Recent::CAPACITY`] entries.
struct Recent {
    key: [u8; 32],
    verifiers: std::collections::HashMap<String, ([u8; 32], String)>,
}

impl Recent {
    const CAPACITY: usize = 4096;

    fn verifier(role: &str, password: &str, iterations: u32) -> String {
        static RECENT: std::sync::Mutex<Option<Option<Recent>>> = std::sync::Mutex::new(None);
        let lock = || {
            RECENT
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        let digest = |key: &[u8; 32]| {
            let mut message = role.as_bytes().to_vec();
            message.push(0);
            message.extend_from_slice(password.as_bytes());
            message.push(0);
            message.extend_from_slice(&iterations.to_be_bytes());
            pgtenant_scram::hmac_sha256(key, &message)
        };
        let known = {
            let mut recent = lock();
            let recent = recent.get_or_insert_with(Recent::new);
            let Some(recent) = recent.as_ref() else {
                return compute_verifier(role, password, iterations);
            };
            let digest = digest(&recent.key);
            match recent.verifiers.get(role) {
                Some((known, verifier)) if *known == digest => return verifier.clone(),
                _ => (recent.key, digest),
            }
        };
        // Computed without the lock: the executor sets many tenants' passwords at once.
        let verifier = compute_verifier(role, password, iterations);
        let (key, digest) = known;
        if let Some(Some(recent)) = lock().as_mut() {
            if recent.key == key {
                if recent.verifiers.len() >= Self::CAPACITY {
                    recent.verifiers.clear();
                }
                recent
                    .verifiers
                    .insert(role.to_string(), (digest, verifier.clone()));
            }
        }
        verifier
    }

    /// None when the system has no randomness to key the digests with: then nothing is kept.
    fn new() -> Option<Recent> {
        use std::io::Read as _;
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .ok()?;
        Some(Recent {
            key,
            verifiers: std::collections::HashMap::new(),
        })
    }
}

fn compute_verifier(role: &str, password: &str, iterations: u32) -> String {
    let mut salt_input = SALT_DOMAIN.to_vec();
    salt_input.extend_from_slice(role.as_bytes());
    let salt = &pgtenant_scram::hi(password.as_bytes(), &salt_input, SALT_ITERATIONS)[..16];
    pgtenant_scram::verifier(password.as_bytes(), salt, iterations)
}

/// A cheap, keyed fingerprint of `password` for `login` with a verifier of `iterations` rounds
/// (HMAC-SHA-256 under `key`, base64): lets the pooler's sync tell that a stored password (and its
/// iteration count) is the one whose verifier it already recorded without running
/// [`scram_verifier`]'s rounds for every login on every apply. Keyed by a random secret of the
/// pooler's private state, so the fingerprint is no guessing oracle. The default count is not
/// part of the message, so fingerprints recorded before the count was a setting stay valid.
pub fn password_digest(key: &str, login: &str, password: &str, iterations: u32) -> String {
    use base64::Engine as _;
    let mut message = login.as_bytes().to_vec();
    message.push(0);
    message.extend_from_slice(password.as_bytes());
    if iterations != pgtenant_secrets::DEFAULT_SCRAM_ITERATIONS {
        message.push(0);
        message.extend_from_slice(iterations.to_string().as_bytes());
    }
    base64::engine::general_purpose::STANDARD
        .encode(pgtenant_scram::hmac_sha256(key.as_bytes(), &message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_are_deterministic_per_role_and_password() {
        let a = scram_verifier("team-app-owner", "secret", 4096);
        assert_eq!(a, scram_verifier("team-app-owner", "secret", 4096));
        assert_ne!(a, scram_verifier("team-app-owner-alt", "secret", 4096));
        assert_ne!(a, scram_verifier("team-app-owner", "secret2", 4096));
        assert!(a.starts_with("SCRAM-SHA-256$4096:"), "{a}");
    }

    /// Another count gives another verifier with that count and the same salt (the salt's own
    /// rounds do not follow the count), and the memo never serves one count's verifier for another.
    #[test]
    fn the_iteration_count_is_the_verifiers_and_keeps_the_salt() {
        let salt_of = |v: &str| {
            v.split('$')
                .nth(1)
                .unwrap()
                .split(':')
                .nth(1)
                .unwrap()
                .to_string()
        };
        let default = scram_verifier("count-role", "secret", 4096);
        let few = scram_verifier("count-role", "secret", 16);
        assert!(few.starts_with("SCRAM-SHA-256$16:"), "{few}");
        assert_eq!(salt_of(&few), salt_of(&default));
        assert_ne!(few, default);
        assert_eq!(few, compute_verifier("count-role", "secret", 16));
        assert_eq!(scram_verifier("count-role", "secret", 4096), default);
        assert_eq!(
            scram_verifier("count-role", "secret", 1),
            compute_verifier("count-role", "secret", 1)
        );
    }

    /// What the memo returns is what the rounds compute, for the password asked about: a new
    /// password of a remembered role is computed again, never served the old verifier.
    #[test]
    fn a_remembered_verifier_is_the_computed_one() {
        let first = scram_verifier("memo-role", "one", 4096);
        assert_eq!(first, compute_verifier("memo-role", "one", 4096));
        assert_eq!(scram_verifier("memo-role", "one", 4096), first);
        let second = scram_verifier("memo-role", "two", 4096);
        assert_eq!(second, compute_verifier("memo-role", "two", 4096));
        assert_ne!(second, first);
        assert_eq!(scram_verifier("memo-role", "one", 4096), first);
    }

    #[test]
    fn password_digests_depend_on_key_login_and_password() {
        let a = password_digest("key", "team-app-owner", "secret", 4096);
        assert_eq!(a, password_digest("key", "team-app-owner", "secret", 4096));
        assert_ne!(
            a,
            password_digest("other key", "team-app-owner", "secret", 4096)
        );
        assert_ne!(
            a,
            password_digest("key", "team-app-owner-alt", "secret", 4096)
        );
        assert_ne!(a, password_digest("key", "team-app-owner", "secret2", 4096));
        assert_ne!(a, password_digest("key", "team-app-owner", "secret", 256));
        assert!(!a.contains("secret"));
    }

    fn set_password(tenant: &str, role: &str) -> crate::Operation {
        crate::Operation {
            tenant: tenant.into(),
            phase: crate::Phase::Roles,
            database: None,
            run_as: None,
            action: Action::SetPassword {
                sql: String::new(),
                role: crate::Ident::new(role),
                secret_path: pgtenant_secrets::SecretPath::parse(&format!("pgtenant/{role}"))
                    .unwrap(),
                dbname: tenant.replace('/', "-"),
                pooler: None,
            },
            why: String::new(),
            destructive: false,
        }
    }

    fn outcome(tenant: &str, applied: usize, planned: usize, failed: bool) -> crate::TenantOutcome {
        crate::TenantOutcome {
            tenant: tenant.into(),
            applied,
            planned,
            error: failed.then(|| crate::execute::OperationError {
                statement: String::new(),
                message: "failed".into(),
                sqlstate: None,
                detail: None,
                hint: None,
            }),
            notes: Vec::new(),
        }
    }

    /// Only the logins of tenants that ran their whole plan count as set by the apply; a scoped
    /// run syncs its tenants (with `--full` too), an unscoped one everything.
    #[test]
    fn a_sync_scope_names_only_passwords_a_complete_tenant_set() {
        let plan = Plan {
            operations: vec![
                set_password("t/a", "t-a-owner"),
                set_password("t/b", "t-b-owner"),
                set_password("t/c", "t-c-owner"),
            ],
            notices: Vec::new(),
        };
        let outcome = ApplyOutcome {
            tenants: vec![
                outcome("t/a", 1, 1, false),
                outcome("t/b", 0, 1, true),
                outcome("t/c", 0, 1, false),
            ],
        };
        let scoped = Request {
            scope: BTreeSet::from(["t/a".to_string(), "t/b".to_string()]),
            ..Request::default()
        };
        let scope = SyncScope::after(&scoped, &plan, &outcome);
        assert_eq!(
            scope.set_by_apply,
            BTreeSet::from(["t-a-owner".to_string()])
        );
        assert_eq!(scope.tenants, Some(scoped.scope.clone()));
        let full = Request {
            full: true,
            ..scoped.clone()
        };
        assert_eq!(
            SyncScope::after(&full, &plan, &outcome).tenants,
            Some(scoped.scope.clone())
        );
        assert_eq!(
            SyncScope::after(&Request::default(), &plan, &outcome).tenants,
            None
        );
    }
}
