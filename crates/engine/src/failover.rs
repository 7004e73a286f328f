//! Surviving a failover of a highly available cluster (Patroni): a run that loses its primary
//! stops its current attempt, finds the new primary, and plans again from the catalog.
//!
//! ```text
//! discover ─▶ apply ─┬─▶ done (no failover error)
//!                    └─▶ failover error (57P01/57P02/57P03/25006, class 08, connection closed/reset)
//!                          ─▶ drop the attempt's sessions ─▶ rediscover the primary (backoff, up to
//!                          the failover timeout) ─▶ apply again: observe, plan, execute
//! ```
//!
//! An attempt is never resumed mid-plan: the next one observes what the last one left (a
//! `CREATE DATABASE` that may or may not have committed is simply there or not) and plans from
//! that. After a failover, every login whose password an interrupted attempt may have set is
//! proven on the new primary with the stored password (asynchronous replication can lose the
//! last commits) and set again when the login fails.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use pgtenant_pg::ErrorClass;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_postgres::error::SqlState;

use crate::connect::Connector;
use crate::desired::Desired;
use crate::execute::{ApplyOutcome, OperationError, Progress, TenantOutcome};
use crate::ident::Ident;
use crate::plan::Plan;
use crate::reconcile::{Applied, ReconcileError, Reconciler, Request};

/// How a run finds its cluster's primary and how long it waits for a new one.
#[derive(Debug, Clone)]
pub struct HaPolicy {
    /// The members' Patroni REST API base URLs (`http://HOST:PORT`); empty: the admin URL's
    /// hosts with `target_session_attrs=read-write` find the primary.
    pub patroni: Vec<String>,
    /// How long to wait for a new primary after losing one (at least Patroni's ttl +
    /// retry_timeout).
    pub timeout: Duration,
    /// Told the primary at the start of each run and after each failover (the cluster's
    /// pooler, whose entries must point at the primary); None: nothing follows it.
    pub follower: Option<Arc<dyn FollowPrimary>>,
}

/// What must point at the current primary, such as the pooler (`Pooler::follow_primary`).
/// Called with the primary's address at the start of each run and after each failover; returns
/// whether anything changed. A failure is logged: it does not stop the run.
#[async_trait::async_trait]
pub trait FollowPrimary: Send + Sync {
    async fn follow_primary(&self, host: &str, port: u16) -> Result<bool, String>;
}

impl std::fmt::Debug for dyn FollowPrimary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FollowPrimary")
    }
}

/// Tells `policy`'s follower where the primary is now.
async fn follow(policy: &HaPolicy, primary: &Primary) {
    let (Some(follower), Some((host, port))) = (&policy.follower, &primary.address) else {
        return;
    };
    match follower.follow_primary(host, *port).await {
        Ok(true) => tracing::info!(host, port, "the pooler follows the new primary"),
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, host, port, "the pooler could not follow the primary"),
    }
}

/// One failover the run survived.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failover {
    /// When the run lost its primary (RFC 3339).
    pub at: String,
    /// The primary it lost (`HOST:PORT`, or the admin URL's hosts).
    pub from: String,
    /// The new primary.
    pub to: String,
    /// From losing the old primary to reaching the new one.
    pub waited_ms: u64,
    /// What the attempt failed with.
    pub cause: String,
}

/// What [`apply`] ran: the last attempt's plan, every tenant's outcome over all attempts, and the
/// failovers survived.
pub struct Survived {
    pub applied: Applied,
    pub failovers: Vec<Failover>,
    /// Logins whose password was lost in a failover and set again (`ROLE`).
    pub passwords_restored: Vec<String>,
}

impl From<Applied> for Survived {
    /// A run without failover handling.
    fn from(applied: Applied) -> Self {
        Survived {
            applied,
            failovers: Vec::new(),
            passwords_restored: Vec::new(),
        }
    }
}

/// A primary: where it is and the connector that reaches only it (or the multi-host one).
#[derive(Clone)]
struct Primary {
    name: String,
    /// The address the server reported (None: it did not say, a Unix socket).
    address: Option<(String, u16)>,
    connector: Arc<Connector>,
}

/// [`Reconciler::apply`] that survives failovers of an HA cluster: see the module's docs. Without
/// a failover it is exactly one `Reconciler::apply`. `progress` is called once per attempt.
pub async fn apply(
    reconciler: &Reconciler,
    policy: &HaPolicy,
    desired: &Desired,
    request: &Request,
    mut progress: impl FnMut(&Plan) -> Progress,
) -> Result<Survived, ReconcileError> {
    let base = reconciler.connector.clone();
    let mut current = match discover(&base, &policy.patroni).await {
        Some(primary) => primary,
        None => Primary {
            name: described(&base),
            address: None,
            connector: base.clone(),
        },
    };
    follow(policy, &current).await;
    let mut failovers = Vec::new();
    let mut earlier: Vec<TenantOutcome> = Vec::new();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    loop {
        let mut attempt = reconciler.clone();
        attempt.connector = current.connector.clone();
        let result = attempt.apply(desired, request, &mut progress).await;
        let cause = match &result {
            Err(error) => is_failover_error(error).then(|| crate::error_chain(error)),
            Ok(applied) => failover_in(&applied.outcome),
        };
        let Some(cause) = cause else {
            let mut result = result.map(|mut applied| {
                applied.outcome = merged(std::mem::take(&mut earlier), applied.outcome);
                applied
            });
            let mut restored = Vec::new();
            if !failovers.is_empty() {
                if let Ok(applied) = &mut result {
                    restored =
                        restore_lost_passwords(&attempt, desired, &touched, &mut applied.outcome)
                            .await;
                }
            }
            return result.map(|applied| Survived {
                applied,
                failovers,
                passwords_restored: restored,
            });
        };
        if failovers.len() >= MAX_FAILOVERS {
            tracing::warn!(
                failovers = failovers.len(),
                "giving up: the primary keeps changing"
            );
            return result.map(|applied| Survived {
                applied,
                failovers,
                passwords_restored: Vec::new(),
            });
        }
        let lost = Instant::now();
        let at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        tracing::warn!(primary = %current.name, %cause, "lost the primary: rediscovering it");
        if let Ok(applied) = &result {
            for tenant in &applied.outcome.tenants {
                if tenant.applied > 0 || tenant.error.is_some() {
                    touched.insert(tenant.tenant.clone());
                }
            }
            earlier = merged(std::mem::take(&mut earlier), applied.outcome.clone()).tenants;
        } else if matches!(result, Err(ReconcileError::ReadBack(_))) {
            // The attempt ran its plan, then lost the primary reading it back: any tenant in
            // scope may have had a password set.
            touched.extend(
                desired
                    .tenants
                    .iter()
                    .filter(|t| request.scope.is_empty() || request.scope.contains(&t.id))
                    .map(|t| t.id.clone()),
            );
        }
        // The attempt's sessions were its own (per call) and are dropped with it.
        let Some(next) = rediscover(&base, &policy.patroni, lost + policy.timeout).await else {
            tracing::error!(
                timeout_s = policy.timeout.as_secs(),
                "no primary within the failover timeout"
            );
            return result.map(|applied| Survived {
                applied,
                failovers,
                passwords_restored: Vec::new(),
            });
        };
        let waited_ms = lost.elapsed().as_millis() as u64;
        tracing::warn!(from = %current.name, to = %next.name, waited_ms, "failover: planning again on the new primary");
        failovers.push(Failover {
            at,
            from: current.name.clone(),
            to: next.name.clone(),
            waited_ms,
            cause,
        });
        current = next;
        follow(policy, &current).await;
    }
}

/// A primary that keeps changing is not waited for forever.
const MAX_FAILOVERS: usize = 10;

/// Whether `error` means the server went away or cannot take writes (its SQLSTATE is of the
/// failover class, or the connection closed, was reset or refused): a new primary may take over.
pub fn is_failover_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = next {
        if let Some(pg) = error.downcast_ref::<tokio_postgres::Error>() {
            if let Some(code) = pg.code() {
                return ErrorClass::of(code) == ErrorClass::Failover;
            }
            if pg.is_closed() {
                return true;
            }
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return lost_connection(io.kind());
        }
        next = error.source();
    }
    false
}

fn lost_connection(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | BrokenPipe
            | UnexpectedEof
            | NotConnected
            | TimedOut
    )
}

/// Whether a tenant's failure is a failover's (as [`is_failover_error`], from what the outcome
/// kept: the SQLSTATE, else the message of an error the server did not report).
pub fn is_failover_failure(error: &OperationError) -> bool {
    match &error.sqlstate {
        Some(code) => ErrorClass::of(&SqlState::from_code(code)) == ErrorClass::Failover,
        None => [
            "connection closed",
            "error communicating with the server",
            "Connection refused",
            "Connection reset",
            "Broken pipe",
            "unexpected EOF",
            "timed out",
        ]
        .iter()
        .any(|what| error.message.contains(what)),
    }
}

/// The first failover failure of an attempt's tenants, as its cause.
fn failover_in(outcome: &ApplyOutcome) -> Option<String> {
    outcome
        .failed()
        .filter_map(|t| t.error.as_ref().map(|e| (t, e)))
        .find(|(_, e)| is_failover_failure(e))
        .map(|(t, e)| format!("{}: {e}", t.tenant))
}

/// One outcome per tenant over the attempts: what each applied, added up; the failure is the
/// last attempt's only (the earlier attempt's were what it stopped on). A tenant the last
/// attempt had nothing to do for is converged: its earlier failure is gone.
fn merged(earlier: Vec<TenantOutcome>, last: ApplyOutcome) -> ApplyOutcome {
    let mut tenants: std::collections::BTreeMap<String, TenantOutcome> = earlier
        .into_iter()
        .map(|mut t| {
            t.error = None;
            t.planned = t.applied;
            (t.tenant.clone(), t)
        })
        .collect();
    for outcome in last.tenants {
        match tenants.get_mut(&outcome.tenant) {
            None => {
                tenants.insert(outcome.tenant.clone(), outcome);
            }
            Some(merged) => {
                merged.planned = merged.applied + outcome.planned;
                merged.applied += outcome.applied;
                merged.notes.extend(outcome.notes);
                merged.error = outcome.error;
            }
        }
    }
    ApplyOutcome {
        tenants: tenants.into_values().collect(),
    }
}

/// `HOST:PORT` of each host the connector tries, comma-separated.
fn described(connector: &Connector) -> String {
    connector
        .hosts()
        .iter()
        .map(|(host, port)| host_port(host, *port))
        .collect::<Vec<_>>()
        .join(",")
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Waits for a primary until `deadline`, with backoff (100 ms doubling to 1 s).
async fn rediscover(
    base: &Arc<Connector>,
    patroni: &[String],
    deadline: Instant,
) -> Option<Primary> {
    let mut pause = Duration::from_millis(100);
    loop {
        if let Some(primary) = discover(base, patroni).await {
            return Some(primary);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The primary now: Patroni's leader when `patroni` lists members (proven by a session that can
/// write), else whichever host of the admin URL takes writes. None: no primary answers.
async fn discover(base: &Arc<Connector>, patroni: &[String]) -> Option<Primary> {
    let connector = if patroni.is_empty() {
        // Each attempt goes through the admin URL again: with several hosts and
        // target_session_attrs=read-write it finds the writer, and a later failover the same way.
        base.clone()
    } else {
        let (host, port) = patroni_leader(patroni).await?;
        Arc::new(Connector::from(base.at(&host, port)))
    };
    let address = writer(&connector).await?;
    Some(Primary {
        name: match &address {
            Some((host, port)) => host_port(host, *port),
            None => described(&connector),
        },
        address,
        connector,
    })
}

/// The address of the server `connector` reaches, when it takes writes (inner None: it did not
/// say where it is).
async fn writer(connector: &Connector) -> Option<Option<(String, u16)>> {
    let attempt = async {
        let client = connector.connect(None).await.ok()?;
        let row = client
            .query_one(
                "SELECT NOT pg_catalog.pg_is_in_recovery(), \
                 coalesce(host(pg_catalog.inet_server_addr()), ''), \
                 coalesce(pg_catalog.inet_server_port(), 0)",
                &[],
            )
            .await
            .ok()?;
        let (writes, host, port): (bool, String, i32) = (row.get(0), row.get(1), row.get(2));
        writes.then(|| (!host.is_empty()).then_some((host, port as u16)))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

/// The leader of Patroni's `/cluster` view, from the first member that answers, when its state
/// is `running`; then `/primary` of that member must answer 200.
async fn patroni_leader(patroni: &[String]) -> Option<(String, u16)> {
    for base in patroni {
        let Some((200, body)) = http_get(base, "/cluster").await else {
            continue;
        };
        let Ok(view) = serde_json::from_str::<serde_json::Value>(&body) else {
            continue;
        };
        let leader = view["members"].as_array()?.iter().find(|m| {
            m["role"].as_str() == Some("leader") && m["state"].as_str() == Some("running")
        })?;
        let host = leader["host"].as_str()?.to_string();
        let port = u16::try_from(leader["port"].as_u64()?).ok()?;
        let api = leader["api_url"]
            .as_str()
            .and_then(|url| url.strip_suffix("/patroni"))
            .map(str::to_string);
        if let Some(api) = api {
            if http_get(&api, "/primary").await.map(|(status, _)| status) != Some(200) {
                return None;
            }
        }
        return Some((host, port));
    }
    None
}

/// GET `path` of a Patroni REST API (`http://HOST:PORT`): the status and the body.
async fn http_get(base: &str, path: &str) -> Option<(u16, String)> {
    let address = base.strip_prefix("http://")?.trim_end_matches('/');
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let text = format!(
            "GET {path} HTTP/1.0\r\nHost: {address}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(text.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream
            .take(4 * 1024 * 1024)
            .read_to_end(&mut response)
            .await
            .ok()?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(2), request)
        .await
        .ok()
        .flatten()
}

/// Proves each login of the `touched` tenants on the current primary with its stored password
/// (a real login, which works for a control role that cannot read pg_authid) and sets the stored
/// password again where the login fails for its password (28P01). Returns the logins set again;
/// a tenant whose login cannot be restored is reported failed.
async fn restore_lost_passwords(
    reconciler: &Reconciler,
    desired: &Desired,
    touched: &BTreeSet<String>,
    outcome: &mut ApplyOutcome,
) -> Vec<String> {
    let mut logins = Vec::new();
    for tenant in desired.tenants.iter().filter(|t| touched.contains(&t.id)) {
        for role in &tenant.roles {
            if let Some(path) = &role.secret_path {
                logins.push((tenant, role.name.clone(), path.clone()));
            }
        }
    }
    let connector = reconciler.connector.clone();
    let store = reconciler.store.clone();
    let checks = futures::stream::iter(logins)
        .map(|(tenant, role, path)| {
            let (connector, store) = (connector.clone(), store.clone());
            async move {
                let result = restore_login(&connector, store.as_ref(), tenant, &role, &path).await;
                (tenant.id.clone(), role, result)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let mut restored = Vec::new();
    for (tenant, role, result) in checks {
        match result {
            Ok(false) => {}
            Ok(true) => {
                tracing::warn!(
                    role = role.as_str(),
                    "a password lost in the failover was set again"
                );
                if let Some(t) = outcome.tenants.iter_mut().find(|t| t.tenant == tenant) {
                    t.notes.push(format!(
                        "{tenant}: the password of {} was lost in the failover and set again",
                        role.as_str()
                    ));
                    t.applied += 1;
                }
                restored.push(role.as_str().to_string());
            }
            Err(message) => {
                if let Some(t) = outcome.tenants.iter_mut().find(|t| t.tenant == tenant) {
                    t.error.get_or_insert(OperationError {
                        statement: crate::sql::set_password(&role),
                        message,
                        sqlstate: None,
                        detail: None,
                        hint: None,
                    });
                }
            }
        }
    }
    restored.sort();
    restored
}

/// Ok(true): the login's password was lost and is set again; Ok(false): it works (or the role
/// holds no stored password yet).
async fn restore_login(
    connector: &Connector,
    store: &dyn pgtenant_secrets::CredentialStore,
    tenant: &crate::DesiredTenant,
    role: &Ident,
    path: &pgtenant_secrets::SecretPath,
) -> Result<bool, String> {
    let Some(credential) = store
        .get(path)
        .await
        .map_err(|e| format!("credential store: {e}"))?
    else {
        return Ok(false);
    };
    let login = connector
        .with_login(&credential.username, &credential.password)
        .as_application();
    match login.connect(Some(tenant.database.as_str())).await {
        Ok(_) => return Ok(false),
        Err(crate::EngineError::Connect { source, .. })
            if source.code() == Some(&SqlState::INVALID_PASSWORD) => {}
        // Not a password question (the role is NOLOGIN on purpose, the database is gone): the
        // plan is the authority on those.
        Err(_) => return Ok(false),
    }
    let verifier = crate::pooler::scram_verifier(
        role.as_str(),
        &credential.password,
        credential.scram_iterations(),
    );
    let control = connector
        .connect(None)
        .await
        .map_err(|e| crate::error_chain(&e))?;
    control
        .batch_execute(&crate::sql::set_password_to(role, &verifier))
        .await
        .map_err(|e| crate::error_chain(&e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(sqlstate: Option<&str>, message: &str) -> OperationError {
        OperationError {
            statement: String::new(),
            message: message.into(),
            sqlstate: sqlstate.map(str::to_string),
            detail: None,
            hint: None,
        }
    }

    #[test]
    fn failover_failures_are_told_from_other_failures() {
        for code in ["57P01", "57P02", "57P03", "25006", "08006", "08001"] {
            assert!(is_failover_failure(&failure(Some(code), "x")), "{code}");
        }
        for code in ["42501", "28P01", "42P04", "23505"] {
            assert!(!is_failover_failure(&failure(Some(code), "x")), "{code}");
        }
        assert!(is_failover_failure(&failure(None, "connection closed")));
        assert!(is_failover_failure(&failure(
            None,
            "cannot connect to the cluster: error connecting to server: Connection refused (os error 111)"
        )));
        assert!(!is_failover_failure(&failure(
            None,
            "credential store: denied"
        )));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(is_failover_error(&io));
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!is_failover_error(&io));
    }

    fn outcome(tenant: &str, applied: usize, planned: usize, failed: bool) -> TenantOutcome {
        TenantOutcome {
            tenant: tenant.into(),
            applied,
            planned,
            error: failed.then(|| failure(Some("57P01"), "terminating connection")),
            notes: Vec::new(),
        }
    }

    #[test]
    fn attempts_add_up_and_only_the_last_failure_counts() {
        let earlier = vec![outcome("a", 3, 9, true), outcome("b", 2, 5, true)];
        let last = ApplyOutcome {
            tenants: vec![outcome("a", 6, 6, false)],
        };
        let merged = merged(earlier, last);
        assert_eq!(merged.tenants.len(), 2);
        let a = &merged.tenants[0];
        assert_eq!((a.applied, a.planned, a.error.is_none()), (9, 9, true));
        // b had nothing left to do on the new primary: it converged before the failover.
        let b = &merged.tenants[1];
        assert_eq!((b.applied, b.error.is_none()), (2, true));
    }
}
