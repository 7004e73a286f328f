//! Moving a tenant to another cluster of the fleet (`pgtenant move`, docs/fleet.md "Moving a
//! tenant"), as data: the steps of an offline move (pg_dump/pg_restore) and of its abort, the
//! markers each leaves, and the queries of its verification. The CLI runs the steps; a failure at
//! any of them is undone by [`Step::undo`] of every step done so far, newest first, so the source
//! stays authoritative.

use serde::Serialize;

use pgtenant_spec::Mode;

use crate::desired::Marker;
use crate::ident::Ident;

/// One step of a move, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The move is written to the local state before anything changes.
    RecordIntent,
    /// The database and the tenant's role names exist on the target (a scoped apply there).
    EnsureTarget,
    /// The target's logins get the stored passwords, as SCRAM verifiers pgtenant computes.
    SetPasswords,
    /// The source's logins are NOLOGIN and its sessions are ended: nothing writes any more.
    StopWrites,
    /// `pg_dump -Fc` of the source database as its owner.
    Dump,
    /// `pg_restore` into the target as its owner, in one transaction; grants re-applied.
    Restore,
    /// Row counts of every table, source against target.
    Verify,
    /// The placement is the target's: both markers and `<state>/fleet/placements.json`.
    RecordPlacement,
    /// The stored credentials name the target's endpoint.
    UpdateCredentials,
    /// Done; the source database is a protected orphan until the tier's retention ends.
    Done,
}

impl Step {
    pub const ALL: [Step; 10] = [
        Step::RecordIntent,
        Step::EnsureTarget,
        Step::SetPasswords,
        Step::StopWrites,
        Step::Dump,
        Step::Restore,
        Step::Verify,
        Step::RecordPlacement,
        Step::UpdateCredentials,
        Step::Done,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::RecordIntent => "record-intent",
            Step::EnsureTarget => "ensure-target",
            Step::SetPasswords => "set-passwords",
            Step::StopWrites => "stop-writes",
            Step::Dump => "dump",
            Step::Restore => "restore",
            Step::Verify => "verify",
            Step::RecordPlacement => "record-placement",
            Step::UpdateCredentials => "update-credentials",
            Step::Done => "done",
        }
    }

    /// What undoing this step (after a later one failed) does; None: nothing to undo.
    pub fn undo(self) -> Option<Undo> {
        match self {
            // The target's copy is not dropped: it is marked a protected orphan and its logins
            // stop, so no fleet run sees the tenant on two clusters.
            Step::EnsureTarget => Some(Undo::OrphanTarget),
            Step::StopWrites => Some(Undo::ResumeSourceLogins),
            Step::RecordPlacement => Some(Undo::PlacementBack),
            Step::UpdateCredentials => Some(Undo::CredentialsBack),
            _ => None,
        }
    }
}

/// What rolling back one step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Undo {
    OrphanTarget,
    ResumeSourceLogins,
    PlacementBack,
    CredentialsBack,
}

/// One planned step, with what it does for this tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    pub step: Step,
    pub what: String,
}

/// The steps of moving `database` (tenant `tenant`, owner `owner`, logins `logins`) from `from`
/// to `to`, the source kept until `until`.
pub fn plan_move(
    tenant: &str,
    database: &Ident,
    owner: &Ident,
    logins: &[Ident],
    from: &str,
    to: &str,
    until: &str,
) -> Vec<PlannedStep> {
    let names = |roles: &[Ident]| {
        roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Step::ALL
        .iter()
        .map(|&step| PlannedStep {
            step,
            what: match step {
                Step::RecordIntent => format!("record the move of {tenant} from `{from}` to `{to}` in the local state"),
                Step::EnsureTarget => {
                    let mut roles = logins.to_vec();
                    if !roles.contains(owner) {
                        roles.insert(0, owner.clone());
                    }
                    format!(
                        "create database {database} and roles {} on `{to}` (a scoped apply)",
                        names(&roles)
                    )
                }
                Step::SetPasswords => format!(
                    "give {} on `{to}` the stored passwords (SCRAM verifiers, no plaintext)",
                    names(logins)
                ),
                Step::StopWrites => format!(
                    "on `{from}`: NOLOGIN for {}, end every session on {database}",
                    names(logins)
                ),
                Step::Dump => format!("pg_dump -Fc of {database} on `{from}` as {}", owner.as_str()),
                Step::Restore => format!(
                    "pg_restore into {database} on `{to}` as {} (one transaction), grants re-applied",
                    owner.as_str()
                ),
                Step::Verify => "compare the row count of every table, source and target".into(),
                Step::RecordPlacement => format!(
                    "record `{to}` in the markers and placements.json; {database} on `{from}` becomes a protected orphan (moved to `{to}`, kept until {until})"
                ),
                Step::UpdateCredentials => format!("the stored credentials of {tenant} name `{to}`'s endpoint"),
                Step::Done => format!("{tenant} lives on `{to}`; `pgtenant move {tenant} --abort` rolls back until {until}"),
            },
        })
        .collect()
}

/// The steps of `pgtenant move --abort` after a completed move from `from` to `to`.
pub fn plan_abort(tenant: &str, from: &str, to: &str) -> Vec<String> {
    vec![
        format!("on `{to}`: NOLOGIN for the tenant's logins, end every session on its database"),
        format!("mark the copy on `{to}` a protected orphan (moved back to `{from}`; not dropped)"),
        format!("restore the marker on `{from}` and record `{from}` in placements.json"),
        format!("on `{from}`: the tenant's logins log in again"),
        format!("the stored credentials of {tenant} name `{from}`'s endpoint again"),
    ]
}

/// The marker of a copy left behind: protected (no plan drops it), the cluster it moved to and
/// until when it is kept.
pub fn orphan_marker(marker: &Marker, moved_to: &str, until: &str) -> Marker {
    Marker {
        mode: Some(Mode::Protected),
        moved_to: Some(moved_to.to_owned()),
        moved_until: Some(until.to_owned()),
        ..marker.clone()
    }
}

/// Every ordinary and partitioned table outside the system schemas, as (schema, table).
pub const TABLES: &str = "
SELECT n.nspname::text, c.relname::text
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
 ORDER BY 1, 2";

/// The statement that counts one table's rows.
pub fn count_rows(schema: &str, table: &str) -> String {
    format!(
        "SELECT pg_catalog.count(*) FROM {}.{}",
        Ident::new(schema.to_owned()).quote(),
        Ident::new(table.to_owned()).quote()
    )
}

/// The tables whose counts differ (or exist on one side only), for the verification's error.
pub fn count_differences(
    source: &[((String, String), i64)],
    target: &[((String, String), i64)],
) -> Vec<String> {
    let target: std::collections::BTreeMap<_, _> = target.iter().cloned().collect();
    let source_map: std::collections::BTreeMap<_, _> = source.iter().cloned().collect();
    let mut differences = Vec::new();
    for ((schema, table), count) in source {
        match target.get(&(schema.clone(), table.clone())) {
            Some(c) if c == count => {}
            Some(c) => differences.push(format!(
                "{schema}.{table}: {count} rows on the source, {c} on the target"
            )),
            None => differences.push(format!("{schema}.{table}: missing on the target")),
        }
    }
    for (schema, table) in target.keys() {
        if !source_map.contains_key(&(schema.clone(), table.clone())) {
            differences.push(format!("{schema}.{table}: only on the target"));
        }
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps() -> Vec<PlannedStep> {
        plan_move(
            "team/app",
            &Ident::new("team-app".to_string()),
            &Ident::new("team-app_owner".to_string()),
            &[
                Ident::new("team-app_admin".to_string()),
                Ident::new("team-app_read".to_string()),
            ],
            "a",
            "b",
            "2026-12-08T00:00:00Z",
        )
    }

    #[test]
    fn a_move_stops_writes_before_the_dump_and_records_the_placement_only_after_verifying() {
        let order: Vec<Step> = steps().iter().map(|s| s.step).collect();
        assert_eq!(order, Step::ALL);
        let at = |step| order.iter().position(|s| *s == step).unwrap();
        assert_eq!(at(Step::RecordIntent), 0, "intent first");
        assert!(at(Step::EnsureTarget) < at(Step::SetPasswords));
        assert!(
            at(Step::StopWrites) < at(Step::Dump),
            "no write after the dump"
        );
        assert!(at(Step::Dump) < at(Step::Restore));
        assert!(at(Step::Restore) < at(Step::Verify));
        assert!(at(Step::Verify) < at(Step::RecordPlacement));
        assert!(at(Step::RecordPlacement) < at(Step::UpdateCredentials));
        assert_eq!(order.last(), Some(&Step::Done));
        let names: Vec<&str> = order.iter().map(|s| s.name()).collect();
        assert_eq!(names[3], "stop-writes");
        assert_eq!(
            serde_json::to_value(Step::UpdateCredentials).unwrap(),
            "update-credentials"
        );
    }

    #[test]
    fn each_step_says_what_it_does_for_the_tenant() {
        let steps = steps();
        assert!(steps[1]
            .what
            .contains("team-app_owner, team-app_admin, team-app_read"));
        assert!(steps[3]
            .what
            .contains("NOLOGIN for team-app_admin, team-app_read"));
        assert!(steps[3].what.contains("`a`"));
        assert!(steps[4].what.contains("pg_dump -Fc") && steps[4].what.contains("team-app_owner"));
        assert!(steps[7].what.contains("protected orphan") && steps[7].what.contains("2026-12-08"));
        assert!(!plan_abort("team/app", "a", "b").is_empty());
    }

    #[test]
    fn a_failure_undoes_the_target_the_logins_the_placement_and_the_credentials() {
        let undone: Vec<Undo> = Step::ALL.iter().rev().filter_map(|s| s.undo()).collect();
        assert_eq!(
            undone,
            [
                Undo::CredentialsBack,
                Undo::PlacementBack,
                Undo::ResumeSourceLogins,
                Undo::OrphanTarget
            ]
        );
        assert_eq!(Step::Dump.undo(), None);
    }

    #[test]
    fn the_orphan_is_protected_and_says_where_and_until_when() {
        let marker: Marker = serde_json::from_str(
            r#"{"managed_by":"pgtenant","tenant":"team/app","mode":"standard","cluster":"a"}"#,
        )
        .unwrap();
        let orphan = orphan_marker(&marker, "b", "2026-12-08T00:00:00Z");
        assert_eq!(orphan.mode, Some(Mode::Protected));
        assert_eq!(orphan.moved_to.as_deref(), Some("b"));
        assert_eq!(orphan.cluster.as_deref(), Some("a"));
        assert_eq!(Marker::parse(&orphan.to_comment()), Some(orphan.clone()));
        assert!(orphan
            .to_comment()
            .contains(r#""moved_until":"2026-12-08T00:00:00Z""#));
    }

    #[test]
    fn counts_are_compared_table_by_table() {
        let t = |s: &str, n| ((String::from("public"), s.to_owned()), n);
        assert!(count_differences(&[t("a", 3)], &[t("a", 3)]).is_empty());
        assert_eq!(
            count_differences(&[t("a", 3), t("b", 1)], &[t("a", 2), t("c", 0)]),
            [
                "public.a: 3 rows on the source, 2 on the target",
                "public.b: missing on the target",
                "public.c: only on the target"
            ]
        );
        assert_eq!(
            count_rows("app", "or\"ders"),
            r#"SELECT pg_catalog.count(*) FROM "app"."or""ders""#
        );
    }
}
