//! The removal half of the plan: tenants the cluster marks as ours that the repo no longer declares,
//! dropped (after their final backup), retained (protected) or held by a guard.

use super::*;

/// The removal half of the plan: tenants the cluster marks as ours that the repo no longer declares.
pub(super) fn plan_removals(
    desired: &Desired,
    observed: &Observed,
    context: &PlanContext,
    plan: &mut Plan,
) {
    let (guard, now) = (&context.guard, context.now.as_str());
    let declared: BTreeSet<&str> = desired.tenants.iter().map(|t| t.id.as_str()).collect();
    // Names a declared tenant derives are never dropped, whatever tenant their marker names: a
    // namespace/name split that changed (`a-b/c` → `a/b-c`) maps to the same database and adopts it.
    let derived: BTreeSet<&str> = desired
        .tenants
        .iter()
        .flat_map(|t| {
            std::iter::once(t.database.as_str()).chain(
                t.roles
                    .iter()
                    .flat_map(|r| [r.name.as_str(), r.alternate.as_str()]),
            )
        })
        .collect();
    let mut removed: BTreeMap<String, Removed> = BTreeMap::new();
    for (name, db) in observed
        .databases
        .iter()
        .filter(|(n, _)| !derived.contains(n.as_str()))
    {
        if let Some(marker) = db.marker() {
            let entry = removed.entry(marker.tenant.clone()).or_default();
            // A marker without a mode is not ours to judge: treat it as protected.
            entry.database = Some((name.clone(), marker.mode.unwrap_or(Mode::Protected)));
            entry.marker = Some(marker);
        }
    }
    for (name, role) in observed
        .roles
        .iter()
        .filter(|(n, _)| !derived.contains(n.as_str()))
    {
        if let Some(Marker {
            tenant,
            role: Some(kind),
            ..
        }) = role.marker()
        {
            removed
                .entry(tenant)
                .or_default()
                .roles
                .push((name.clone(), kind));
        }
    }
    removed.retain(|tenant, _| !declared.contains(tenant.as_str()));

    let dropping: Vec<&String> = removed
        .iter()
        .filter(|(_, found)| !matches!(found.database, Some((_, Mode::Protected))))
        .map(|(tenant, _)| tenant)
        .collect();
    let databases_dropping = removed
        .values()
        .filter(|found| matches!(found.database, Some((_, Mode::Standard))))
        .count();
    let declared_namespaces: BTreeSet<&str> = desired
        .tenants
        .iter()
        .map(|t| t.namespace.as_str())
        .collect();
    let hold_all = desired.drops_held_because.clone().or_else(|| {
        if desired.tenants.is_empty() && !dropping.is_empty() && !guard.allow_empty_repo {
            Some("no database is declared in the repo (the wrong directory?): nothing is dropped; \
                  pass --allow-empty-repo to remove every tenant"
                .to_string())
        } else if databases_dropping > guard.max_drops {
            Some(format!(
                "{databases_dropping} databases would be dropped, more than --max-drops {}: nothing is dropped; \
                 rerun with --max-drops {databases_dropping} if that is intended",
                guard.max_drops
            ))
        } else {
            None
        }
    });

    // A non-superuser control role borrows the removed roles for the statements that need them.
    let control =
        (!observed.server.is_superuser).then(|| Ident::new(observed.server.current_user.clone()));
    // Databases dropped in this run: nothing is left to clear inside them.
    let mut dropped_here: BTreeSet<String> = BTreeSet::new();
    for (tenant, found) in removed {
        let database = found.database.as_ref().map(|(name, _)| name.clone());
        let notice = |kind, reason: String| Notice {
            kind,
            tenant: tenant.clone(),
            database: database.clone(),
            reason,
        };
        // Not removed at all, as far as anyone can tell: its file may still declare it.
        if let Some(reason) = desired.undeclared_because_of_errors(&tenant) {
            plan.notices.push(notice(NoticeKind::Held, reason));
            continue;
        }
        if let Some((name, Mode::Protected)) = &found.database {
            // Only when the repo is trustworthy: a broken file may still declare it.
            let unmarked = found
                .marker
                .as_ref()
                .filter(|m| m.orphaned_since.is_none() && hold_all.is_none());
            if let Some(marker) = unmarked {
                let marked = Marker {
                    orphaned_since: Some(now.to_string()),
                    ..marker.clone()
                };
                let comment = Operation {
                    tenant: tenant.clone(),
                    phase: Phase::Database,
                    database: None,
                    run_as: None,
                    action: Action::Sql {
                        sql: sql::comment_on_database(&Ident::new(name.clone()), &marked),
                        transactional: true,
                    },
                    why: "record since when the protected database is no longer declared (`pgtenant list`)".into(),
                    destructive: false,
                };
                // COMMENT ON DATABASE is its owner's.
                plan.operations.extend(borrowing(
                    control.as_ref(),
                    &database_owner(observed, name),
                    vec![comment],
                ));
            }
            plan.notices.push(notice(
                NoticeKind::Retained,
                "protected: removed from the repo, so no longer reconciled; the database, its roles and \
                 credentials are kept. Declare it again to adopt it with its data; to drop it, first set \
                 `mode: standard` and apply, then remove it."
                    .into(),
            ));
            continue;
        }
        if let Some(reason) = &hold_all {
            plan.notices.push(notice(NoticeKind::Held, reason.clone()));
            continue;
        }
        let namespace = tenant.split_once('/').map_or(tenant.as_str(), |(ns, _)| ns);
        let namespace_allowed =
            guard.allow_empty_repo || guard.allow_namespace_removal.iter().any(|n| n == namespace);
        if !declared_namespaces.contains(namespace) && !namespace_allowed {
            plan.notices.push(notice(
                NoticeKind::Held,
                format!(
                    "namespace {namespace} declares no database any more (a folder lost in a merge?): nothing in it \
                     is dropped; pass --allow-namespace-removal {namespace} if it is meant to go"
                ),
            ));
            continue;
        }
        let renamed_to: Vec<&str> = desired
            .tenants
            .iter()
            .filter(|t| {
                t.namespace == namespace && !observed.databases.contains_key(t.database.as_str())
            })
            .map(|t| t.id.as_str())
            .collect();
        let rename_hint = match renamed_to.as_slice() {
            [] => String::new(),
            new => format!(
                "; {} is new in the same namespace: if this is a rename, note that a rename is a drop and a create, \
                 the data is not moved (keep the old name, or restore the final backup into the new one)",
                new.join(", ")
            ),
        };
        let drop_in = |database: Option<Ident>, action: Action, why: String| Operation {
            tenant: tenant.clone(),
            phase: Phase::Drop,
            database,
            run_as: None,
            action,
            why,
            destructive: true,
        };
        let drop = |action: Action, why: String| drop_in(None, action, why);
        let mut roles = found.roles;
        roles.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        if let Some((name, _)) = &found.database {
            let database = Ident::new(name.clone());
            let environment = found
                .marker
                .as_ref()
                .and_then(|m| m.environment)
                .or(context.platform_environment)
                .unwrap_or_default();
            let before_drop = |phase, action, why: &str| Operation {
                phase,
                destructive: false,
                ..drop(action, why.to_string())
            };
            plan.operations.push(before_drop(
                Phase::StopLogins,
                Action::StopLogins {
                    database: database.clone(),
                    roles: roles.iter().map(|(n, _)| Ident::new(n.clone())).collect(),
                },
                "the final backup must hold the last write: nothing may write between the dump and the drop",
            ));
            plan.operations.push(before_drop(
                Phase::FinalBackup,
                Action::FinalBackup {
                    database,
                    environment,
                    retention_days: environment.retention_days(),
                },
                &format!(
                    "a standard database is dropped only after its final backup (tier {}, `pgtenant trash list`, \
                     `pgtenant trash restore`); if the backup fails it is not dropped and its logins are given back",
                    environment.as_str()
                ),
            ));
            if let Some(control) = &control {
                // DROP DATABASE (outside any transaction) is its owner's: the control role takes the
                // database over first, in a transaction that borrows the owner.
                let take_over = Operation {
                    destructive: false,
                    ..drop(
                        Action::Sql {
                            sql: sql::alter_database_owner(&Ident::new(name.clone()), control),
                            transactional: true,
                        },
                        "pgtenant's own: the control role takes the database over to drop it (DROP DATABASE \
                         is the owner's)"
                            .into(),
                    )
                };
                plan.operations.extend(borrowing(
                    Some(control),
                    &database_owner(observed, name),
                    vec![take_over],
                ));
            }
            plan.operations.push(drop(
                Action::Sql { sql: sql::drop_database(&Ident::new(name.clone())), transactional: false },
                format!("mode standard and removed from the repo: its logins are stopped and a final backup is taken to the trash \
                         (kept for its tier's retention, `pgtenant trash list`), then it is dropped, open sessions terminated{rename_hint}"),
            ));
            dropped_here.insert(name.clone());
        }
        if !roles.is_empty() {
            let idents: Vec<Ident> = roles.iter().map(|(n, _)| Ident::new(n.clone())).collect();
            // pg_terminate_backend needs the privileges of each session's role.
            let terminate = drop(
                Action::Sql { sql: sql::terminate_sessions_of(&idents), transactional: true },
                "the removed tenant's roles end their sessions on every database: a temporary table one of \
                 them holds (in `postgres`, say) would keep DROP ROLE from succeeding"
                    .into(),
            );
            plan.operations
                .extend(borrowing(control.as_ref(), &idents, vec![terminate]));
        }
        // Where the roles still own or hold something outside their own database (another tenant
        // granted them a privilege, say): cleared there, in those databases only.
        let own_database = found.database.as_ref().map(|(name, _)| name.as_str());
        let mut elsewhere: BTreeMap<Option<String>, Vec<Ident>> = BTreeMap::new();
        for (name, _) in &roles {
            for database in observed.role_dependencies.get(name).into_iter().flatten() {
                if database.as_deref() != own_database {
                    elsewhere
                        .entry(database.clone())
                        .or_default()
                        .push(Ident::new(name.clone()));
                }
            }
        }
        for (database, holders) in elsewhere {
            let why = format!(
                "the roles {} still own objects or hold privileges {} (granted by another tenant?): DROP ROLE \
                 fails until they are cleared there",
                names(&holders),
                database.as_ref().map_or_else(
                    || "on shared objects (another database, a tablespace)".to_string(),
                    |d| format!("in database {d}")
                ),
            );
            // DROP OWNED needs the privileges of the roles whose objects it drops, and revokes what
            // they were granted as the control role: only what the control role could revoke, so the
            // database's owner (who granted it, one owner per tenant) is borrowed too.
            let mut borrowed = holders.clone();
            if let Some(d) = &database {
                borrowed.extend(database_owner(observed, d).into_iter().filter(|owner| {
                    // A tenant's owner only (pgtenant's marker): never a superuser or a
                    // role pgtenant does not manage.
                    !holders.contains(owner)
                        && observed
                            .roles
                            .get(owner.as_str())
                            .is_some_and(|r| r.marker().is_some())
                }));
            }
            let drop_owned = drop_in(
                database.map(Ident::new),
                Action::Sql {
                    sql: sql::drop_owned(&holders),
                    transactional: true,
                },
                why,
            );
            plan.operations
                .extend(borrowing(control.as_ref(), &borrowed, vec![drop_owned]));
        }
        for (name, _) in &roles {
            plan.operations.push(drop(
                Action::Sql {
                    sql: sql::drop_role(&Ident::new(name.clone())),
                    transactional: true,
                },
                "role of a removed standard database".into(),
            ));
        }
        if let Some((namespace, database)) = tenant.split_once('/') {
            let kinds: BTreeSet<RoleKind> = roles.iter().map(|(_, kind)| *kind).collect();
            for kind in kinds {
                let secret_path = SecretPath::for_role(namespace, database, kind.as_str());
                if observed.stored_paths.contains(&secret_path) {
                    plan.operations.push(drop(
                        Action::DeleteCredential { secret_path },
                        "credentials of a dropped role".into(),
                    ));
                }
            }
        }
    }
    plan.operations.retain(|op| {
        op.phase != Phase::Drop
            || op
                .database
                .as_ref()
                .is_none_or(|d| !dropped_here.contains(d.as_str()))
    });
}

/// The owner of `database` (as observed), to borrow for what only it may do.
fn database_owner(observed: &Observed, database: &str) -> Vec<Ident> {
    observed
        .databases
        .get(database)
        .map(|d| Ident::new(d.owner.clone()))
        .into_iter()
        .collect()
}

/// Limits on what one run may drop (issue: a bad merge, a wrong directory, a mistyped key).
#[derive(Debug, Clone)]
pub struct DropGuard {
    /// At most this many databases dropped in one run; more holds every drop.
    pub max_drops: usize,
    /// Allow drops when the repo declares no database at all (and so of whole namespaces).
    pub allow_empty_repo: bool,
    /// Namespaces that may lose all their databases in this run.
    pub allow_namespace_removal: Vec<String>,
}

impl Default for DropGuard {
    fn default() -> Self {
        DropGuard {
            max_drops: 1,
            allow_empty_repo: false,
            allow_namespace_removal: Vec::new(),
        }
    }
}

#[derive(Default)]
pub(super) struct Removed {
    marker: Option<Marker>,
    database: Option<(String, Mode)>,
    roles: Vec<(String, RoleKind)>,
}
