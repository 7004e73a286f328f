//! The pure part of a restore and a verification, decided before (or between) the steps that
//! touch a cluster: the `--into` rules, whether a time target is restorable and which backup set
//! serves it, the restore's id, and the text of the commands and statements that run.

use std::collections::BTreeMap;
use std::path::Path;

use crate::pgbackrest::{BackupSet, StanzaInfo};
use crate::timestamp::Timestamp;
use crate::{BackupError, TenantName, Window};

use super::{RestorePoint, RestoreRequest};

/// What steps 1 and 2 start from.
pub(super) enum Source {
    Physical {
        set: Box<BackupSet>,
        /// PostgreSQL major version of the backup.
        version: String,
        /// `Some(target)` for a time target, None for the end of the set.
        time: Option<Timestamp>,
        single_database: bool,
    },
    Logical {
        id: String,
    },
}

impl Source {
    /// The backup set (or logical backup) the data comes from, whether the scratch restore holds
    /// only the one database, and how many steps the restore has.
    pub(super) fn summary(&self) -> (String, bool, usize) {
        match self {
            Source::Physical {
                set,
                single_database,
                ..
            } => (set.label.clone(), *single_database, 4),
            Source::Logical { id } => (id.clone(), false, 2),
        }
    }
}

/// The id of a restore started at `started` into `into`.
pub(super) fn restore_id(started: Timestamp, into: &TenantName) -> String {
    format!("{}R-{}.{}", started.compact(), into.namespace, into.name)
}

/// The kind of a restore point (`time` or `backup`) and its text, as the catalog records them.
pub(super) fn target_of(point: &RestorePoint) -> (&'static str, String) {
    match point {
        RestorePoint::Time(t) => ("time", t.to_rfc3339()),
        RestorePoint::Backup(id) => ("backup", id.clone()),
    }
}

/// How far a scratch cluster recovers: to the time target, or to the end of the backup set.
pub(super) fn recovery_target(time: Option<Timestamp>) -> String {
    match time {
        Some(t) => format!("to {t}"),
        None => "to its end".to_string(),
    }
}

/// The arguments of `pgbackrest restore` of backup set `label` into the scratch data directory
/// `data_dir`: only the database `only` if given (`--db-include`), recovered to `time` or, without
/// one, to the end of the set, then promoted; archiving off.
pub(super) fn scratch_restore_args(
    data_dir: &Path,
    label: &str,
    only: Option<&str>,
    time: Option<Timestamp>,
) -> Vec<String> {
    let mut args = vec![
        format!("--pg1-path={}", data_dir.display()),
        format!("--set={label}"),
        "--archive-mode=off".to_string(),
    ];
    if let Some(database) = only {
        args.push(format!("--db-include={database}"));
    }
    match time {
        Some(t) => args.extend([
            "--type=time".to_string(),
            format!("--target={}", t.to_postgres()),
            "--target-action=promote".to_string(),
        ]),
        None => args.extend([
            "--type=immediate".to_string(),
            "--target-action=promote".to_string(),
        ]),
    }
    args
}

/// How many of the objects found in a database that is not empty the refusal names.
const USER_OBJECTS_NAMED: usize = 5;

/// The refusal of a restore into another database: `rule` is what it breaks, `flag` what allows it.
fn refuse_into(request: &RestoreRequest, rule: String, flag: &str) -> BackupError {
    BackupError::Restore(format!(
        "not restoring {} into {}: {rule}; nothing was changed (pass {flag} if that is what you \
         want)",
        request.tenant.id(),
        request.into.id()
    ))
}

/// The `--into` rules that need no look at the target database: none in place; the same
/// namespace unless `--allow-cross-namespace`. Returns whether the target's contents must still
/// be checked ([`check_into_contents`]): they must, unless in place or `--replace`.
pub(super) fn check_into_rules(request: &RestoreRequest) -> Result<bool, BackupError> {
    let (tenant, into) = (&request.tenant, &request.into);
    if into == tenant {
        return Ok(false);
    }
    if into.namespace != tenant.namespace && !request.allow_cross_namespace {
        return Err(refuse_into(
            request,
            format!(
                "a restore goes only into a database of the same namespace ({}), and {} is \
                 namespace {}'s",
                tenant.namespace,
                into.id(),
                into.namespace
            ),
            "--allow-cross-namespace",
        ));
    }
    Ok(!request.replace)
}

/// The `--into` rules on the target database's contents, given its comment and the objects users
/// made in it: not a protected database, and one with no objects of its own.
pub(super) fn check_into_contents(
    request: &RestoreRequest,
    comment: Option<&str>,
    objects: &[String],
) -> Result<(), BackupError> {
    let into = &request.into;
    let database = into.database();
    let protected = comment
        .and_then(pgtenant_engine::desired::Marker::parse)
        .is_some_and(|m| m.mode == Some(pgtenant_spec::Mode::Protected));
    if protected {
        return Err(refuse_into(
            request,
            format!(
                "{} is a protected database, which a restore replaces only when told to",
                into.id()
            ),
            "--replace",
        ));
    }
    if !objects.is_empty() {
        let more = if objects.len() > USER_OBJECTS_NAMED {
            format!(" and {} more", objects.len() - USER_OBJECTS_NAMED)
        } else {
            String::new()
        };
        return Err(refuse_into(
            request,
            format!(
                "a restore goes only into an empty database, and {database} holds {}{more}",
                objects[..objects.len().min(USER_OBJECTS_NAMED)].join(", ")
            ),
            "--replace",
        ));
    }
    Ok(())
}

/// A logical backup restores only the tenant it holds (`holds`).
pub(super) fn check_logical_tenant(
    id: &str,
    holds: &str,
    tenant: &TenantName,
) -> Result<(), BackupError> {
    if holds != tenant.id() {
        return Err(BackupError::Restore(format!(
            "logical backup {id} holds {}, not {}: restore it as `pgtenant restore {} \
             --backup {id} --into {}`",
            holds,
            tenant.id(),
            holds,
            tenant.id()
        )));
    }
    Ok(())
}

/// The refusal of a time target outside the restorable window.
pub(super) fn outside_window(target: Timestamp, window: &Window, reason: String) -> BackupError {
    BackupError::OutsideWindow {
        target: target.to_string(),
        window: window.to_string(),
        reason,
    }
}

/// A time target must be in the restorable window (of a stanza with backups): not in the future
/// (`now`), not before the end of the oldest backup kept.
pub(super) fn check_time_target(
    target: Timestamp,
    now: Timestamp,
    window: &Window,
    retention_days: u32,
) -> Result<(), BackupError> {
    if target > now {
        let mut window = window.clone();
        window.latest = Some(now);
        return Err(outside_window(
            target,
            &window,
            format!("it is in the future (now is {now})"),
        ));
    }
    let earliest = window.earliest.expect("there are backups");
    if target < earliest {
        return Err(outside_window(
            target,
            window,
            format!(
                "it is before the end of the oldest backup kept (retention: {retention_days} days)"
            ),
        ));
    }
    Ok(())
}

/// The backup set a restore to `target` starts from: the newest that ends before it.
pub(super) fn set_for_time(backups: &[BackupSet], target: Timestamp) -> Option<&BackupSet> {
    backups
        .iter()
        .filter(|b| Timestamp::from_unix(b.timestamp.stop + 1) <= target)
        .max_by_key(|b| b.timestamp.stop)
}

/// The backup set `backup verify [ID]` restores: `id`, else the newest.
pub(super) fn set_to_verify<'a>(
    backups: &'a [BackupSet],
    id: Option<&str>,
) -> Result<&'a BackupSet, BackupError> {
    match id {
        Some(id) => backups.iter().find(|b| b.label == id),
        None => backups.iter().max_by_key(|b| b.timestamp.stop),
    }
    .ok_or_else(|| match id {
        Some(id) => BackupError::UnknownBackup(id.to_string()),
        None => BackupError::NoBackups,
    })
}

/// Whether a backup set's detailed info (`pgbackrest info --set`) lists `database`.
pub(super) fn set_holds(detailed: BackupSet, database: &str) -> bool {
    detailed
        .databases
        .unwrap_or_default()
        .iter()
        .any(|d| d.name == database)
}

/// Schemas and relations of a database, with their owners.
#[derive(Debug, Default)]
pub(super) struct Objects {
    pub(super) schemas: BTreeMap<String, String>,
    /// (schema, name) → (relkind, owner)
    pub(super) relations: BTreeMap<(String, String), (String, String)>,
}

/// The statements dropping what exists in the live database (`live`) but did not exist in the
/// snapshot (tables created after the target time), so that the result equals the snapshot: only
/// what `admin` owns (a schema it owns goes with everything in it); the rest is returned as kept,
/// described for a warning.
pub(super) fn newer_objects_prelude(
    live: &Objects,
    snapshot: &Objects,
    admin: &str,
) -> (String, Vec<String>) {
    let admin = admin.to_string();
    let mut prelude = String::new();
    let mut kept = Vec::new();
    for (schema, owner) in &live.schemas {
        if snapshot.schemas.contains_key(schema) {
            continue;
        }
        if owner == &admin {
            prelude.push_str(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE;\n",
                quote(schema)
            ));
        } else {
            kept.push(format!("schema {schema} (owned by {owner})"));
        }
    }
    for ((schema, name), (kind, owner)) in &live.relations {
        if snapshot
            .relations
            .contains_key(&(schema.clone(), name.clone()))
            || !snapshot.schemas.contains_key(schema) && live.schemas.get(schema) == Some(&admin)
        {
            continue;
        }
        let Some(keyword) = drop_keyword(kind) else {
            continue;
        };
        if owner == &admin {
            prelude.push_str(&format!(
                "DROP {keyword} IF EXISTS {}.{} CASCADE;\n",
                quote(schema),
                quote(name)
            ));
        } else {
            kept.push(format!(
                "{} {schema}.{name} (owned by {owner})",
                keyword.to_lowercase()
            ));
        }
    }
    (prelude, kept)
}

fn drop_keyword(relkind: &str) -> Option<&'static str> {
    Some(match relkind {
        "r" | "p" => "TABLE",
        "v" => "VIEW",
        "m" => "MATERIALIZED VIEW",
        "f" => "FOREIGN TABLE",
        "S" => "SEQUENCE",
        _ => return None,
    })
}

/// An identifier, always double-quoted, through the project's one quoting function.
fn quote(name: &str) -> String {
    pgtenant_pg::Ident::new(name).quote()
}

/// The major version a backup set was taken from.
pub(super) fn set_version(info: &StanzaInfo, set: &BackupSet) -> String {
    info.db
        .iter()
        .find(|db| db.id == set.database.id)
        .or(info.db.last())
        .map(|db| db.version.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Login;

    fn request(tenant: (&str, &str), into: (&str, &str)) -> RestoreRequest {
        RestoreRequest {
            tenant: TenantName::new(tenant.0, tenant.1),
            into: TenantName::new(into.0, into.1),
            point: RestorePoint::Backup("x".into()),
            owner: "owner".into(),
            login: Login {
                user: "admin".into(),
                password: "secret".into(),
            },
            replace: false,
            allow_cross_namespace: false,
        }
    }

    fn set(label: &str, stop: i64, db: i64, databases: &[&str]) -> BackupSet {
        let refs: Vec<_> = databases
            .iter()
            .enumerate()
            .map(|(i, name)| serde_json::json!({"name": name, "oid": 16384 + i}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "label": label,
            "type": "full",
            "timestamp": {"start": stop - 10, "stop": stop},
            "info": {"size": 1, "delta": 1, "repository": {"size": 1, "delta": 1}},
            "archive": {"start": null, "stop": null},
            "database": {"id": db},
            "database-ref": refs,
        }))
        .unwrap()
    }

    fn message(result: Result<impl std::fmt::Debug, BackupError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn restore_ids_and_targets() {
        let started = Timestamp::parse("2026-11-21T08:33:03Z").unwrap();
        assert_eq!(
            restore_id(started, &TenantName::new("shop", "cart")),
            format!("{}R-shop.cart", started.compact())
        );
        assert_eq!(
            target_of(&RestorePoint::Backup("20261121-083300F".into())),
            ("backup", "20261121-083300F".to_string())
        );
        assert_eq!(
            target_of(&RestorePoint::Time(started)),
            ("time", started.to_rfc3339())
        );
        assert_eq!(recovery_target(None), "to its end");
        assert_eq!(recovery_target(Some(started)), format!("to {started}"));
    }

    #[test]
    fn sources_summarize_their_steps() {
        let physical = |single_database| Source::Physical {
            set: Box::new(set("S", 100, 1, &[])),
            version: "15".into(),
            time: None,
            single_database,
        };
        assert_eq!(physical(true).summary(), ("S".to_string(), true, 4));
        assert_eq!(physical(false).summary(), ("S".to_string(), false, 4));
        let logical = Source::Logical { id: "L".into() };
        assert_eq!(logical.summary(), ("L".to_string(), false, 2));
    }

    #[test]
    fn scratch_restore_arguments() {
        let data = Path::new("/s/data");
        let t = Timestamp::from_unix(1_795_249_983);
        assert_eq!(
            scratch_restore_args(data, "S", Some("shop-cart"), Some(t)),
            [
                "--pg1-path=/s/data".to_string(),
                "--set=S".into(),
                "--archive-mode=off".into(),
                "--db-include=shop-cart".into(),
                "--type=time".into(),
                format!("--target={}", t.to_postgres()),
                "--target-action=promote".into(),
            ]
        );
        // The whole cluster to the end of the set: what `backup verify` restores.
        assert_eq!(
            scratch_restore_args(data, "S", None, None),
            [
                "--pg1-path=/s/data",
                "--set=S",
                "--archive-mode=off",
                "--type=immediate",
                "--target-action=promote",
            ]
        );
    }

    #[test]
    fn into_rules_without_a_look_at_the_database() {
        // In place: nothing to check.
        assert!(!check_into_rules(&request(("a", "x"), ("a", "x"))).unwrap());
        // Same namespace: the contents must be checked, unless --replace.
        let mut same = request(("a", "x"), ("a", "y"));
        assert!(check_into_rules(&same).unwrap());
        same.replace = true;
        assert!(!check_into_rules(&same).unwrap());
        // Another namespace: refused unless --allow-cross-namespace, whatever --replace says.
        let mut other = request(("a", "x"), ("b", "y"));
        other.replace = true;
        assert_eq!(
            message(check_into_rules(&other)),
            "not restoring a/x into b/y: a restore goes only into a database of the same \
             namespace (a), and b/y is namespace b's; nothing was changed (pass \
             --allow-cross-namespace if that is what you want)"
        );
        other.allow_cross_namespace = true;
        assert!(!check_into_rules(&other).unwrap());
        other.replace = false;
        assert!(check_into_rules(&other).unwrap());
    }

    #[test]
    fn into_rules_on_the_database_contents() {
        let request = request(("a", "x"), ("a", "y"));
        assert!(check_into_contents(&request, None, &[]).is_ok());
        assert!(check_into_contents(&request, Some("a comment of someone else"), &[]).is_ok());
        let marker =
            |mode: &str| format!(r#"{{"managed_by":"pgtenant","tenant":"a/y","mode":"{mode}"}}"#);
        assert!(check_into_contents(&request, Some(&marker("standard")), &[]).is_ok());
        assert_eq!(
            message(check_into_contents(
                &request,
                Some(&marker("protected")),
                &[]
            )),
            "not restoring a/x into a/y: a/y is a protected database, which a restore replaces \
             only when told to; nothing was changed (pass --replace if that is what you want)"
        );
        let objects: Vec<String> = (1..=7).map(|i| format!("table public.t{i}")).collect();
        assert_eq!(
            message(check_into_contents(&request, None, &objects[..2])),
            "not restoring a/x into a/y: a restore goes only into an empty database, and a-y \
             holds table public.t1, table public.t2; nothing was changed (pass --replace if that \
             is what you want)"
        );
        assert!(
            message(check_into_contents(&request, None, &objects)).contains(
                "holds table public.t1, table public.t2, table public.t3, table public.t4, \
             table public.t5 and 2 more;"
            )
        );
    }

    #[test]
    fn logical_backups_restore_only_their_tenant() {
        let tenant = TenantName::new("a", "x");
        assert!(check_logical_tenant("L1", "a/x", &tenant).is_ok());
        assert_eq!(
            message(check_logical_tenant("L1", "b/y", &tenant)),
            "logical backup L1 holds b/y, not a/x: restore it as `pgtenant restore b/y --backup \
             L1 --into a/x`"
        );
    }

    #[test]
    fn time_targets_inside_the_window_only() {
        let earliest = Timestamp::from_unix(1_000);
        let now = Timestamp::from_unix(5_000);
        let window = Window {
            earliest: Some(earliest),
            latest: Some(Timestamp::from_unix(4_000)),
            wal_min: None,
            wal_max: None,
        };
        assert!(check_time_target(earliest, now, &window, 7).is_ok());
        assert!(check_time_target(now, now, &window, 7).is_ok());
        let future = Timestamp::from_unix(5_001);
        match check_time_target(future, now, &window, 7).unwrap_err() {
            BackupError::OutsideWindow {
                target,
                window: shown,
                reason,
            } => {
                assert_eq!(target, future.to_string());
                // The window shown ends now, not at the last archived segment.
                assert_eq!(shown, format!("{earliest} … {now}"));
                assert_eq!(reason, format!("it is in the future (now is {now})"));
            }
            other => panic!("{other}"),
        }
        let early = Timestamp::from_unix(999);
        assert_eq!(
            message(check_time_target(early, now, &window, 35)),
            format!(
                "{early} is outside the restorable window {window}: it is before the end of the \
                 oldest backup kept (retention: 35 days); nothing was changed"
            )
        );
    }

    #[test]
    fn backup_sets_chosen_for_a_time_and_for_verify() {
        let sets = [
            set("A", 100, 1, &[]),
            set("C", 300, 1, &[]),
            set("B", 200, 1, &[]),
        ];
        let at = |t| set_for_time(&sets, Timestamp::from_unix(t)).map(|s| s.label.as_str());
        assert_eq!(at(100), None);
        assert_eq!(at(101), Some("A"));
        assert_eq!(at(250), Some("B"));
        assert_eq!(at(301), Some("C"));
        assert_eq!(set_to_verify(&sets, None).unwrap().label, "C");
        assert_eq!(set_to_verify(&sets, Some("A")).unwrap().label, "A");
        assert!(matches!(
            set_to_verify(&sets, Some("Z")),
            Err(BackupError::UnknownBackup(id)) if id == "Z"
        ));
        assert!(matches!(
            set_to_verify(&[], None),
            Err(BackupError::NoBackups)
        ));
    }

    #[test]
    fn backup_set_databases_and_versions() {
        assert!(set_holds(set("A", 100, 1, &["postgres", "a-x"]), "a-x"));
        assert!(!set_holds(set("A", 100, 1, &["postgres"]), "a-x"));
        let info: StanzaInfo = serde_json::from_value(serde_json::json!({
            "name": "s",
            "db": [{"id": 1, "version": "14"}, {"id": 2, "version": "15"}],
            "status": {"code": 0, "message": "ok"},
        }))
        .unwrap();
        assert_eq!(set_version(&info, &set("A", 100, 1, &[])), "14");
        assert_eq!(set_version(&info, &set("A", 100, 2, &[])), "15");
        // An unknown database id: the newest.
        assert_eq!(set_version(&info, &set("A", 100, 9, &[])), "15");
    }

    #[test]
    fn drop_statements_for_objects_newer_than_the_snapshot() {
        let owned = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let relation = |schema: &str, name: &str, kind: &str, owner: &str| {
            (
                (schema.to_string(), name.to_string()),
                (kind.to_string(), owner.to_string()),
            )
        };
        let snapshot = Objects {
            schemas: owned(&[("public", "adm")]),
            relations: [relation("public", "kept", "r", "adm")].into(),
        };
        let live = Objects {
            schemas: owned(&[("public", "adm"), ("new", "adm"), ("theirs", "other")]),
            relations: [
                relation("public", "kept", "r", "adm"),
                relation("public", "we\"ird", "r", "adm"),
                relation("public", "v", "v", "adm"),
                relation("public", "seq", "S", "adm"),
                relation("public", "idx", "i", "adm"),
                relation("public", "foreign", "m", "other"),
                // Goes with its schema.
                relation("new", "t", "r", "adm"),
                relation("theirs", "t", "r", "other"),
            ]
            .into(),
        };
        let (prelude, kept) = newer_objects_prelude(&live, &snapshot, "adm");
        assert_eq!(
            prelude,
            "DROP SCHEMA IF EXISTS \"new\" CASCADE;\n\
             DROP SEQUENCE IF EXISTS \"public\".\"seq\" CASCADE;\n\
             DROP VIEW IF EXISTS \"public\".\"v\" CASCADE;\n\
             DROP TABLE IF EXISTS \"public\".\"we\"\"ird\" CASCADE;\n"
        );
        assert_eq!(
            kept,
            [
                "schema theirs (owned by other)",
                "materialized view public.foreign (owned by other)",
                "table theirs.t (owned by other)",
            ]
        );
        let (prelude, kept) = newer_objects_prelude(&snapshot, &snapshot, "adm");
        assert!(prelude.is_empty() && kept.is_empty());
    }

    #[test]
    fn drop_keywords_and_quoting() {
        assert_eq!(drop_keyword("r"), Some("TABLE"));
        assert_eq!(drop_keyword("p"), Some("TABLE"));
        assert_eq!(drop_keyword("f"), Some("FOREIGN TABLE"));
        assert_eq!(drop_keyword("m"), Some("MATERIALIZED VIEW"));
        assert_eq!(drop_keyword("i"), None);
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
