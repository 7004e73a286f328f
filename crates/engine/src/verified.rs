//! Skipping what cannot have changed: each tenant database's catalog as last verified, with the
//! `pg_stat_database` counters it was verified against, so the next run reconnects only to the
//! databases where something may have happened since.
//!
//! Every change the planner compares inside a database (a GRANT, a REVOKE, an owner, a schema,
//! default privileges, an extension) writes a catalog row, and the server counts catalog rows in
//! the database's `tup_inserted`, `tup_updated` and `tup_deleted` like any other rows, once the
//! writing session flushes its statistics. A database is trusted only when its OID, those counters
//! and their reset time are exactly what they were when it was last verified, the tenant's
//! declaration is the same, no role was renamed (names inside its ACLs would change without a
//! write in it), the server counts at all, and the verification is younger than the bound
//! ([`Trust::trust_for`]): statistics are flushed lazily (an idle session's write shows up to
//! ~10 s later, a busy one's up to a minute, some never: a crashed backend's), so a periodic full
//! pass stays. When in doubt, inspect.
//!
//! Transactions are not counted: they move without any write. Autovacuum visits every database
//! once per `autovacuum_naptime` (a minute by default) and commits two transactions there when it
//! finds nothing to do (measured on PostgreSQL 15: 137 of 1,000 idle tenant databases had
//! `xact_commit` +2 and no row counter moved within 15 s), so with 1,000 tenants a no-op plan
//! a few seconds after the last one re-inspected dozens of databases, and hundreds after a
//! minute. pgtenant's own inspection writes nothing, so its counters are the same when it has
//! ended: [`snapshot`] reads them in the inspection session, in a statement of its own before the
//! catalog is read, and a write they count has ended before the catalog read began, so the
//! catalog shows it. A write by anybody after the read shows as a change next time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::desired::DesiredTenant;
use crate::observed::{DatabaseCatalog, DatabaseStats, Statistics};

/// How long a verification is trusted at most, unless configured.
pub const DEFAULT_TRUST_FOR: Duration = Duration::from_secs(600);

/// Bumped when what is stored, or how catalogs are read, changes: older files are ignored.
/// 2: the counters are the row counters only.
const FORMAT: u32 = 2;

/// The last verification of each tenant database, as kept between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verifications {
    format: u32,
    /// The engine that wrote them: another version may read catalogs differently.
    version: String,
    /// Every role's name by OID when they were written.
    pub role_names: BTreeMap<u32, String>,
    /// By database name.
    pub databases: BTreeMap<String, VerifiedDatabase>,
}

impl Verifications {
    pub fn new() -> Self {
        Verifications {
            format: FORMAT,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }
    }

    /// These, if this engine wrote them; none otherwise.
    pub fn current(self) -> Self {
        if self.format == FORMAT && self.version == env!("CARGO_PKG_VERSION") {
            self
        } else {
            Verifications::new()
        }
    }

    /// These after a run that read `statistics` and verified `fresh` (by database) and `failed`
    /// (inspected without a usable snapshot): entries of databases that are gone or another
    /// database now, and every older entry when a role was renamed, are dropped.
    pub fn updated(
        &self,
        statistics: &Statistics,
        fresh: BTreeMap<String, VerifiedDatabase>,
        failed: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut next = self.clone();
        if renamed(&self.role_names, &statistics.role_names) {
            next.databases.clear();
        }
        next.role_names = statistics.role_names.clone();
        next.databases.retain(|name, entry| {
            statistics
                .databases
                .get(name)
                .is_some_and(|s| s.oid == entry.stats.oid)
        });
        for name in failed {
            next.databases.remove(&name);
        }
        next.databases.extend(fresh);
        next
    }
}

/// One database's catalog as read, and the counters that say nothing happened in it since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifiedDatabase {
    /// The counters as they are once the verifying session has ended.
    pub stats: DatabaseStats,
    pub verified_at: SystemTime,
    /// [`declaration`] of the tenant the catalog was read for.
    pub declaration: String,
    pub catalog: DatabaseCatalog,
}

/// Where the last verifications are kept: a file for the CLI, memory for a daemon. Reading never
/// fails (nothing usable: everything is inspected); writing is best effort.
pub trait VerificationStore: Send + Sync {
    fn load(&self) -> Verifications;
    fn save(&self, verifications: &Verifications);
}

/// Keeps nothing: every run inspects every database.
pub struct NoVerifications;

impl VerificationStore for NoVerifications {
    fn load(&self) -> Verifications {
        Verifications::new()
    }

    fn save(&self, _: &Verifications) {}
}

/// Keeps them in memory, for a process that runs many times (`serve`).
#[derive(Default)]
pub struct InMemory(Mutex<Verifications>);

impl VerificationStore for InMemory {
    fn load(&self) -> Verifications {
        self.0.lock().expect("not poisoned").clone().current()
    }

    fn save(&self, verifications: &Verifications) {
        *self.0.lock().expect("not poisoned") = verifications.clone();
    }
}

/// What the reconciler may trust, and for how long.
#[derive(Clone)]
pub struct Trust {
    pub store: Arc<dyn VerificationStore>,
    /// A verification older than this is done again whatever the counters say; zero: always.
    pub trust_for: Duration,
}

impl Trust {
    /// Trusts nothing: every run inspects every database.
    pub fn none() -> Self {
        Trust {
            store: Arc::new(NoVerifications),
            trust_for: Duration::ZERO,
        }
    }
}

impl Trust {
    /// Keeps the verifications in this process's memory (a daemon's repeated runs).
    pub fn in_memory(trust_for: Duration) -> Self {
        Trust {
            store: Arc::new(InMemory::default()),
            trust_for,
        }
    }
}

impl Default for Trust {
    fn default() -> Self {
        Trust::none()
    }
}

/// Why a database is inspected in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `--full`.
    Full,
    /// The server does not count (`track_counts` off, for the cluster or this database).
    NotCounted,
    NeverVerified,
    /// The server has no statistics for the database.
    NoStatistics,
    /// A role was renamed since: names inside the database's ACLs changed with it.
    RoleRenamed,
    /// Another database of the same name (dropped and created again).
    Recreated,
    /// Its statistics were reset.
    StatisticsReset,
    /// Rows were written in it since.
    Changed,
    /// The tenant's declaration changed: the catalog is read for its roles.
    DeclarationChanged,
    /// The last verification is older than the bound (or in the future).
    Expired,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Full => "full",
            Reason::NotCounted => "not-counted",
            Reason::NeverVerified => "never-verified",
            Reason::NoStatistics => "no-statistics",
            Reason::RoleRenamed => "role-renamed",
            Reason::Recreated => "recreated",
            Reason::StatisticsReset => "statistics-reset",
            Reason::Changed => "changed",
            Reason::DeclarationChanged => "declaration-changed",
            Reason::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Trust,
    Inspect(Reason),
}

/// What a run knows about one database before deciding whether to look inside.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub full: bool,
    /// The server counts transactions for this database.
    pub counting: bool,
    /// A role's name changed since the last verifications were written.
    pub role_renamed: bool,
    pub now: SystemTime,
    pub trust_for: Duration,
    /// From this run's cluster-wide read.
    pub stats: Option<&'a DatabaseStats>,
    /// [`declaration`] of the tenant now.
    pub declaration: &'a str,
}

/// Whether `last` still holds for the database `facts` describe. Pure.
pub fn decide(facts: &Facts<'_>, last: Option<&VerifiedDatabase>) -> Decision {
    let inspect = Decision::Inspect;
    if facts.full {
        return inspect(Reason::Full);
    }
    if !facts.counting {
        return inspect(Reason::NotCounted);
    }
    let Some(last) = last else {
        return inspect(Reason::NeverVerified);
    };
    let Some(stats) = facts.stats else {
        return inspect(Reason::NoStatistics);
    };
    if facts.role_renamed {
        return inspect(Reason::RoleRenamed);
    }
    if stats.oid != last.stats.oid {
        return inspect(Reason::Recreated);
    }
    if stats.stats_reset != last.stats.stats_reset {
        return inspect(Reason::StatisticsReset);
    }
    if *stats != last.stats {
        return inspect(Reason::Changed);
    }
    if facts.declaration != last.declaration {
        return inspect(Reason::DeclarationChanged);
    }
    match facts.now.duration_since(last.verified_at) {
        Ok(age) if age < facts.trust_for => Decision::Trust,
        // Older than the bound, or written by a clock ahead of this one.
        _ => inspect(Reason::Expired),
    }
}

/// Whether a role that existed at both times has another name now.
pub fn renamed(before: &BTreeMap<u32, String>, now: &BTreeMap<u32, String>) -> bool {
    before
        .iter()
        .any(|(oid, name)| now.get(oid).is_some_and(|current| current != name))
}

/// Whether the server counts transactions in `database`, from the cluster-wide read: the control
/// session's `track_counts`, and no `ALTER DATABASE … SET track_counts` other than on.
pub fn counting(statistics: &Statistics, database_settings: &BTreeMap<String, String>) -> bool {
    statistics.track_counts
        && database_settings
            .get("track_counts")
            .is_none_or(|value| matches!(value.as_str(), "on" | "true"))
}

/// A digest of everything declared for `tenant`: the catalog is read for its roles and owner, so
/// a catalog read for another declaration is not reused (any change of the tenant re-reads it).
pub fn declaration(tenant: &DesiredTenant) -> String {
    let json = serde_json::to_vec(tenant).expect("a declaration serializes");
    let digest = Sha256::digest(&json);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// In the inspection session, before the catalog is read, in a statement of its own: the
/// database's counters, or None when they cannot be believed (the session does not count, or the
/// read failed: the catalog is read all the same, and not trusted later). A write these counters
/// count ended before this statement did, so the catalog read after it shows what it did.
pub async fn snapshot(client: &Client) -> Option<DatabaseStats> {
    let row = match client.query_typed(SNAPSHOT, &[]).await {
        Ok(rows) => rows.into_iter().next()?,
        Err(error) => {
            tracing::debug!(%error, "no statistics: the catalog read is not trusted later");
            return None;
        }
    };
    let counting: bool = row.get(5);
    counting.then(|| DatabaseStats {
        oid: row.get(0),
        tup_inserted: row.get(1),
        tup_updated: row.get(2),
        tup_deleted: row.get(3),
        stats_reset: row.get(4),
    })
}

/// The current database's OID and counters, as [`crate::catalog`]'s cluster-wide statistics read
/// them (the functions `pg_stat_database` is made of, called directly: in the inspection's fresh
/// backend the view's rewrite and its two dozen columns cost ~2 ms of server CPU), and whether this
/// session counts.
const SNAPSHOT: &str = "
SELECT d.oid, pg_catalog.pg_stat_get_db_tuples_inserted(d.oid), pg_catalog.pg_stat_get_db_tuples_updated(d.oid),
       pg_catalog.pg_stat_get_db_tuples_deleted(d.oid),
       (EXTRACT(EPOCH FROM pg_catalog.pg_stat_get_db_stat_reset_time(d.oid)) * 1000000)::int8,
       pg_catalog.current_setting('track_counts')::bool
  FROM pg_catalog.pg_database d
 WHERE d.datname = pg_catalog.current_database()";

/// A short stable name for a cluster from what identifies it (its name, host, port, user): the
/// verifications of one cluster are never read for another.
pub fn cluster_key(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\0").as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `trust_for` as a duration (`10m`, `90s`, `0`).
pub fn parse_trust_for(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e} (for example 10m, 90s, 0)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(updated: i64) -> DatabaseStats {
        DatabaseStats {
            oid: 16384,
            tup_inserted: 10,
            tup_updated: updated,
            tup_deleted: 1,
            stats_reset: None,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn last() -> VerifiedDatabase {
        VerifiedDatabase {
            stats: stats(40),
            verified_at: at(0),
            declaration: "d1".into(),
            catalog: DatabaseCatalog::default(),
        }
    }

    fn facts(current: &DatabaseStats) -> Facts<'_> {
        Facts {
            full: false,
            counting: true,
            role_renamed: false,
            now: at(60),
            trust_for: Duration::from_secs(600),
            stats: Some(current),
            declaration: "d1",
        }
    }

    #[test]
    fn unchanged_counters_within_the_bound_are_trusted() {
        let current = stats(40);
        assert_eq!(decide(&facts(&current), Some(&last())), Decision::Trust);
    }

    #[test]
    fn anything_in_doubt_is_inspected() {
        let same = stats(40);
        let cases: Vec<(Facts<'_>, Option<VerifiedDatabase>, Reason)> = vec![
            (
                Facts {
                    full: true,
                    ..facts(&same)
                },
                Some(last()),
                Reason::Full,
            ),
            (
                Facts {
                    counting: false,
                    ..facts(&same)
                },
                Some(last()),
                Reason::NotCounted,
            ),
            (facts(&same), None, Reason::NeverVerified),
            (
                Facts {
                    stats: None,
                    ..facts(&same)
                },
                Some(last()),
                Reason::NoStatistics,
            ),
            (
                Facts {
                    role_renamed: true,
                    ..facts(&same)
                },
                Some(last()),
                Reason::RoleRenamed,
            ),
            (
                Facts {
                    declaration: "d2",
                    ..facts(&same)
                },
                Some(last()),
                Reason::DeclarationChanged,
            ),
            (
                Facts {
                    now: at(600),
                    ..facts(&same)
                },
                Some(last()),
                Reason::Expired,
            ),
            (
                Facts {
                    trust_for: Duration::ZERO,
                    ..facts(&same)
                },
                Some(last()),
                Reason::Expired,
            ),
            (
                // Verified "in the future": a clock went back.
                Facts {
                    now: at(0) - Duration::from_secs(1),
                    ..facts(&same)
                },
                Some(last()),
                Reason::Expired,
            ),
        ];
        for (facts, last, reason) in cases {
            assert_eq!(
                decide(&facts, last.as_ref()),
                Decision::Inspect(reason),
                "{facts:?}"
            );
        }
        let moved = |change: fn(&mut DatabaseStats)| {
            let mut current = stats(40);
            change(&mut current);
            decide(&facts(&current), Some(&last()))
        };
        for change in [
            (|s: &mut DatabaseStats| s.tup_inserted += 1) as fn(&mut DatabaseStats),
            |s| s.tup_updated += 1,
            |s| s.tup_updated -= 1,
            |s| s.tup_deleted += 1,
        ] {
            assert_eq!(moved(change), Decision::Inspect(Reason::Changed));
        }
        assert_eq!(moved(|s| s.oid += 1), Decision::Inspect(Reason::Recreated));
        assert_eq!(
            moved(|s| s.stats_reset = Some(1)),
            Decision::Inspect(Reason::StatisticsReset)
        );
    }

    #[test]
    fn only_a_new_name_for_the_same_role_is_a_rename() {
        let before = BTreeMap::from([(10, "a".to_string()), (11, "b".to_string())]);
        let dropped_and_added = BTreeMap::from([(10, "a".to_string()), (12, "b".to_string())]);
        let renamed_one = BTreeMap::from([(10, "a".to_string()), (11, "c".to_string())]);
        assert!(!renamed(&before, &before));
        assert!(!renamed(&before, &dropped_and_added));
        assert!(renamed(&before, &renamed_one));
    }

    #[test]
    fn counting_needs_track_counts_for_the_cluster_and_the_database() {
        let on = Statistics {
            track_counts: true,
            ..Statistics::default()
        };
        let settings = |value: &str| BTreeMap::from([("track_counts".into(), value.into())]);
        assert!(counting(&on, &BTreeMap::new()));
        assert!(counting(&on, &settings("on")));
        assert!(!counting(&on, &settings("off")));
        assert!(!counting(&Statistics::default(), &BTreeMap::new()));
    }

    #[test]
    fn an_update_drops_what_no_longer_holds() {
        let mut old = Verifications::new();
        old.role_names = BTreeMap::from([(10, "a".to_string())]);
        for name in ["kept", "gone", "recreated", "failed"] {
            old.databases.insert(name.into(), last());
        }
        let mut statistics = Statistics {
            track_counts: true,
            role_names: old.role_names.clone(),
            databases: BTreeMap::from([
                ("kept".to_string(), stats(40)),
                ("failed".to_string(), stats(40)),
                (
                    "recreated".to_string(),
                    DatabaseStats {
                        oid: 1,
                        ..stats(40)
                    },
                ),
            ]),
        };
        let next = old.updated(&statistics, BTreeMap::new(), ["failed".to_string()]);
        assert_eq!(next.databases.keys().collect::<Vec<_>>(), ["kept"]);

        statistics.role_names.insert(10, "renamed".into());
        let fresh = BTreeMap::from([("failed".to_string(), last())]);
        let next = old.updated(&statistics, fresh, []);
        assert_eq!(next.databases.keys().collect::<Vec<_>>(), ["failed"]);
        assert_eq!(next.role_names[&10], "renamed");
    }

    #[test]
    fn verifications_survive_json_and_other_versions_are_ignored() {
        let mut catalog = DatabaseCatalog::default();
        catalog.default_acls.insert(
            ("owner".into(), "r".into()),
            crate::observed::DefaultAcl {
                acl_text: "{x=r/owner}".into(),
                acl: crate::observed::acl_from_pairs([(Some("x"), "SELECT"), (None, "USAGE")]),
            },
        );
        let mut verifications = Verifications::new();
        verifications
            .databases
            .insert("db".into(), VerifiedDatabase { catalog, ..last() });
        let json = serde_json::to_string(&verifications).unwrap();
        let back: Verifications = serde_json::from_str(&json).unwrap();
        assert_eq!(back.clone().current(), verifications);
        let other = Verifications {
            version: "0.0.0-other".into(),
            ..back
        };
        assert!(other.current().databases.is_empty());
        assert_eq!(parse_trust_for("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_trust_for("0").unwrap(), Duration::ZERO);
        assert!(parse_trust_for("soon").is_err());
    }
}
