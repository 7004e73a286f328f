use std::collections::BTreeMap;
use std::path::PathBuf;

use pgtenant_secrets::SecretPath;
use pgtenant_spec::{DatabaseSpec, Mode, SourceLocation};

use super::*;
use crate::desired::{Desired, DesiredTenant, Marker, RoleAttributes, RoleKind};
use crate::observed::{
    acl_from_pairs, DatabaseCatalog, DefaultAcl, ForeignGrant, Observed, ObservedDatabase,
    ObservedRelation, ObservedRole, ObservedSchema, ServerInfo, StoredCredential,
};

const CONTROL: &str = "pgtenant";

fn spec(namespace: &str, name: &str, mode: Mode) -> DatabaseSpec {
    DatabaseSpec {
        namespace: namespace.into(),
        name: name.into(),
        mode,
        location: SourceLocation {
            file: PathBuf::from(format!("{namespace}/{name}/values.yaml")),
            line: 2,
            column: 11,
        },
        ..DatabaseSpec::default()
    }
}

fn desired(specs: &[DatabaseSpec]) -> Desired {
    Desired {
        tenants: specs.iter().map(DesiredTenant::from_spec).collect(),
        drops_held_because: None,
        failed_files: Vec::new(),
    }
}

fn context() -> PlanContext {
    PlanContext {
        endpoint_host: "db.internal".into(),
        endpoint_port: 5432,
        pooler: None,
        pooler_lookup: false,
        guard: DropGuard::default(),
        superuser_extensions: Default::default(),
        scram_iterations: pgtenant_secrets::DEFAULT_SCRAM_ITERATIONS,
        now: "2026-11-21T09:00:00Z".into(),
        scope: Default::default(),
        platform_environment: None,
    }
}

fn empty_cluster() -> Observed {
    Observed {
        server: ServerInfo {
            version_num: 150_018,
            current_user: CONTROL.into(),
            is_superuser: false,
            max_connections: 100,
            reserved_connections: 3,
            connections_in_use: 5,
        },
        ..Observed::default()
    }
}

/// The state a successful apply leaves behind, written out by hand from the seed's role model,
/// so the planner is checked against an independent statement of it.
fn converge(observed: &mut Observed, tenant: &DesiredTenant) {
    let db = tenant.database.as_str();
    let admin = tenant.owner().as_str();
    let write = tenant.role(RoleKind::Write).unwrap().name.as_str();
    let read = tenant.role(RoleKind::Read).unwrap().name.as_str();
    for role in &tenant.roles {
        observed.roles.insert(
            role.name.to_string(),
            ObservedRole {
                attributes: RoleAttributes::TENANT,
                comment: Some(Marker::role(tenant, role.kind).to_comment()),
                member_of: Default::default(),
                // No standing membership of the control role: it borrows a role per transaction.
                members: Default::default(),
                config: Default::default(),
                membership_grantors: Default::default(),
                database_config: Default::default(),
            },
        );
        observed
            .stored_paths
            .insert(role.secret_path.clone().expect("idp roles log in"));
        observed.stored_credentials.insert(
            role.secret_path.clone().expect("idp roles log in"),
            StoredCredential {
                username: role.name.to_string(),
                endpoint: "db.internal".into(),
                port: 5432,
                dbname: db.into(),
                pooler: None,
                scram_iterations: pgtenant_secrets::DEFAULT_SCRAM_ITERATIONS,
            },
        );
    }
    observed.databases.insert(
        db.into(),
        ObservedDatabase {
            owner: admin.into(),
            comment: Some(Marker::database(tenant).to_comment()),
            acl_text: None,
            acl: acl_from_pairs([
                (Some(admin), "CREATE"),
                (Some(admin), "TEMPORARY"),
                (Some(admin), "CONNECT"),
                (Some(write), "CONNECT"),
                (Some(write), "TEMPORARY"),
                (Some(read), "CONNECT"),
                (Some(read), "TEMPORARY"),
                (Some(CONTROL), "CONNECT"),
            ]),
            allow_connections: true,
            connection_limit: -1,
            settings: Default::default(),
        },
    );
    let schema_acl = acl_from_pairs([
        (Some(admin), "USAGE"),
        (Some(admin), "CREATE"),
        (Some(write), "USAGE"),
        (Some(read), "USAGE"),
    ]);
    let default_acl = |pairs: Vec<(Option<&str>, &str)>| DefaultAcl {
        acl_text: String::new(),
        acl: acl_from_pairs(pairs),
    };
    let catalog = DatabaseCatalog {
        schemas: BTreeMap::from([(
            "public".to_string(),
            ObservedSchema {
                owner: admin.into(),
                acl_text: None,
                acl: schema_acl,
            },
        )]),
        default_acls: BTreeMap::from([
            (
                (admin.to_string(), "r".to_string()),
                default_acl(vec![
                    (Some(write), "SELECT"),
                    (Some(write), "INSERT"),
                    (Some(write), "UPDATE"),
                    (Some(write), "DELETE"),
                    (Some(write), "TRUNCATE"),
                    (Some(read), "SELECT"),
                ]),
            ),
            (
                (admin.to_string(), "S".to_string()),
                default_acl(vec![
                    (Some(write), "SELECT"),
                    (Some(write), "UPDATE"),
                    (Some(write), "USAGE"),
                    (Some(read), "SELECT"),
                ]),
            ),
            (
                (admin.to_string(), "n".to_string()),
                default_acl(vec![(Some(write), "USAGE"), (Some(read), "USAGE")]),
            ),
        ]),
        relations: vec![ObservedRelation {
            schema: "public".into(),
            name: "orders".into(),
            is_sequence: false,
            owner: admin.into(),
            acl: acl_from_pairs([
                (Some(write), "SELECT"),
                (Some(write), "INSERT"),
                (Some(write), "UPDATE"),
                (Some(write), "DELETE"),
                (Some(write), "TRUNCATE"),
                (Some(read), "SELECT"),
            ]),
        }],
        extensions: Default::default(),
        foreign_grants: Vec::new(),
        owned_by_others: Default::default(),
        pooler_lookup: None,
    };
    observed.database_catalogs.insert(db.into(), catalog);
}

/// The plan as a reviewer reads it.
fn render(plan: &Plan) -> String {
    let mut text = String::new();
    for op in &plan.operations {
        let place = match (&op.database, &op.run_as) {
            (Some(d), who) => format!(
                " in {d} as {}",
                who.as_ref().map_or("the control role", |r| r.as_str())
            ),
            (None, Some(who)) => format!(" as {who}"),
            (None, None) => String::new(),
        };
        let mark = if op.destructive { "DESTRUCTIVE " } else { "" };
        text.push_str(&format!(
            "{} [{}{place}] {mark}{}\n    -- {}\n",
            op.tenant,
            op.phase.as_str(),
            op.display(),
            op.why
        ));
    }
    for notice in &plan.notices {
        text.push_str(&format!(
            "{:?} {}: {}\n",
            notice.kind, notice.tenant, notice.reason
        ));
    }
    text
}

#[test]
fn new_tenant_on_an_empty_cluster() {
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Standard)]);
    let plan = plan(&desired, &empty_cluster(), &context());
    insta::assert_snapshot!(render(&plan));
}

/// A non-superuser control role holds no membership in the owner, so it creates the database for
/// itself and hands it over in a transaction that borrows the owner (GRANT … REVOKE around the
/// ALTER … OWNER, nothing committed); every later statement on the database runs as the owner
/// (the executor borrows `run_as` the same way), for a new database and an existing one.
#[test]
fn a_new_database_is_created_by_the_control_role_and_handed_over_in_a_borrowing_transaction() {
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Standard)]);
    let owner = desired.tenants[0].owner().clone();
    let created = plan(&desired, &empty_cluster(), &context());
    let database: Vec<&Operation> = created
        .operations
        .iter()
        .filter(|op| op.phase == Phase::Database)
        .collect();
    let shown: Vec<String> = database.iter().take(4).map(|op| op.display()).collect();
    assert_eq!(
        shown,
        [
            r#"CREATE DATABASE "idp-dev-my-db";"#,
            r#"GRANT "idp-dev-my-db-admin" TO "pgtenant";"#,
            r#"ALTER DATABASE "idp-dev-my-db" OWNER TO "idp-dev-my-db-admin";"#,
            r#"REVOKE "idp-dev-my-db-admin" FROM "pgtenant";"#,
        ],
        "{}",
        render(&created)
    );
    assert!(database[..4]
        .iter()
        .all(|op| op.run_as.is_none() && op.database.is_none()));
    assert!(database.len() > 4);
    for op in &database[4..] {
        assert_eq!(op.database, None, "{}", op.display());
        assert_eq!(op.run_as.as_ref(), Some(&owner), "{}", op.display());
    }

    let mut observed = empty_cluster();
    converge(&mut observed, &desired.tenants[0]);
    let db = observed.databases.get_mut("idp-dev-my-db").unwrap();
    db.connection_limit = 3;
    db.comment = None;
    let repair = plan(&desired, &observed, &context());
    let database: Vec<&Operation> = repair
        .operations
        .iter()
        .filter(|op| op.phase == Phase::Database)
        .collect();
    assert_eq!(database.len(), 2, "{}", render(&repair));
    assert!(database.iter().all(|op| op.run_as.as_ref() == Some(&owner)));

    // A superuser control role names the owner at once and repairs as itself.
    let mut superuser = empty_cluster();
    superuser.server.is_superuser = true;
    let created = plan(&desired, &superuser, &context());
    assert_eq!(
        created
            .operations
            .iter()
            .find(|op| op.phase == Phase::Database)
            .unwrap()
            .display(),
        r#"CREATE DATABASE "idp-dev-my-db" OWNER "idp-dev-my-db-admin";"#
    );
}

/// Standing memberships of the control role (an earlier version's, or a final backup's that a
/// crash left behind) are revoked once, explained as pgtenant's own; afterwards the plan is clean.
#[test]
fn standing_memberships_of_the_control_role_are_revoked_once_as_pgtenants_own() {
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Standard)]);
    let mut observed = empty_cluster();
    converge(&mut observed, &desired.tenants[0]);
    for role in &desired.tenants[0].roles {
        observed
            .roles
            .get_mut(role.name.as_str())
            .unwrap()
            .members
            .insert(CONTROL.to_string());
    }
    let revoking = plan(&desired, &observed, &context());
    assert_eq!(revoking.operations.len(), 3, "{}", render(&revoking));
    for op in &revoking.operations {
        assert!(
            op.display().starts_with("REVOKE ") && op.display().ends_with(r#" FROM "pgtenant";"#),
            "{}",
            op.display()
        );
        assert!(op.why.starts_with("pgtenant's own"), "{}", op.why);
    }
    for role in &desired.tenants[0].roles {
        observed
            .roles
            .get_mut(role.name.as_str())
            .unwrap()
            .members
            .clear();
    }
    assert!(plan(&desired, &observed, &context()).is_converged());
}

#[test]
fn converged_state_plans_nothing() {
    let desired = desired(&[
        spec("idp-dev", "my-db", Mode::Standard),
        spec("shop", "cart", Mode::Protected),
    ]);
    let mut observed = empty_cluster();
    for tenant in &desired.tenants {
        converge(&mut observed, tenant);
    }
    let plan = plan(&desired, &observed, &context());
    assert!(plan.is_converged(), "{}", render(&plan));
}

#[test]
fn drift_is_repaired() {
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Standard)]);
    let tenant = &desired.tenants[0];
    let mut observed = empty_cluster();
    converge(&mut observed, tenant);
    let read = "idp-dev-my-db-read".to_string();
    let write = "idp-dev-my-db-write".to_string();

    // A role attribute altered, a membership granted to another role, credentials lost.
    let admin_role = observed.roles.get_mut("idp-dev-my-db-admin").unwrap();
    admin_role.attributes.createdb = true;
    observed
        .roles
        .get_mut(&read)
        .unwrap()
        .member_of
        .insert("pg_read_all_data".into());
    observed
        .stored_credentials
        .remove(&SecretPath::for_role("idp-dev", "my-db", "write"));
    // Database: owner changed by hand, CONNECT granted to PUBLIC, CREATE to write, another tenant's role let in.
    let db = observed.databases.get_mut("idp-dev-my-db").unwrap();
    db.owner = "postgres".into();
    let admin_privileges = db.acl.remove(&Some("idp-dev-my-db-admin".into())).unwrap();
    db.acl.insert(Some("postgres".into()), admin_privileges);
    db.acl.insert(None, ["CONNECT".to_string()].into());
    db.acl
        .get_mut(&Some(write.clone()))
        .unwrap()
        .insert("CREATE".into());
    db.acl.insert(
        Some("shop-cart-read".into()),
        ["CONNECT".to_string()].into(),
    );
    // Inside: a default privilege removed, a grant revoked by hand, a new schema without USAGE.
    let catalog = observed.database_catalogs.get_mut("idp-dev-my-db").unwrap();
    catalog
        .default_acls
        .remove(&("idp-dev-my-db-admin".into(), "n".into()));
    catalog.relations[0].acl.remove(&Some(read.clone()));
    catalog.schemas.insert(
        "reporting".into(),
        ObservedSchema {
            owner: "idp-dev-my-db-admin".into(),
            acl_text: None,
            acl: acl_from_pairs([
                (Some("idp-dev-my-db-admin"), "USAGE"),
                (Some("idp-dev-my-db-admin"), "CREATE"),
            ]),
        },
    );
    let plan = plan(&desired, &observed, &context());
    insta::assert_snapshot!(render(&plan));
}

#[test]
fn removed_tenants_dropped_retained_or_held() {
    let kept = spec("idp-dev", "my-db", Mode::Standard);
    let removed_standard = spec("idp-dev", "old", Mode::Standard);
    let removed_protected = spec("shop", "cart", Mode::Protected);
    let mut observed = empty_cluster();
    for s in [&kept, &removed_standard, &removed_protected] {
        converge(&mut observed, &DesiredTenant::from_spec(s));
    }
    // Someone else's database and role on the shared cluster: never ours to drop.
    observed.databases.insert(
        "analytics".into(),
        ObservedDatabase {
            owner: "postgres".into(),
            comment: Some("BI team".into()),
            acl_text: None,
            acl: Acl::new(),
            allow_connections: true,
            connection_limit: -1,
            settings: Default::default(),
        },
    );

    // The kept tenant granted the removed one's read role something, and that role holds a
    // temporary table in `postgres`: cleared there before its DROP ROLE.
    observed.role_dependencies.insert(
        "idp-dev-old-read".into(),
        [
            Some("idp-dev-my-db".to_string()),
            Some("postgres".to_string()),
        ]
        .into(),
    );
    observed.role_dependencies.insert(
        "idp-dev-old-write".into(),
        [Some("postgres".to_string())].into(),
    );

    let mut wanted = desired(std::slice::from_ref(&kept));
    let plan_now = plan(&wanted, &observed, &context());
    insta::assert_snapshot!("removals", render(&plan_now));
    assert!(plan_now
        .operations
        .iter()
        .filter(|op| op.destructive)
        .all(|op| op.tenant == "idp-dev/old"));

    wanted.drops_held_because = Some("1 spec file(s) failed to parse".into());
    let held = plan(&wanted, &observed, &context());
    assert!(held.operations.is_empty(), "{}", render(&held));
    let kinds: Vec<(NoticeKind, &str)> = held
        .notices
        .iter()
        .map(|n| (n.kind, n.tenant.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (NoticeKind::Held, "idp-dev/old"),
            (NoticeKind::Retained, "shop/cart")
        ]
    );

    // The failed file is the removed tenants' own: they are kept because of it, not "removed".
    wanted.failed_files = vec![
        "shop/cart/values.yaml".into(),
        "idp-dev/x/values.yaml".into(),
    ];
    let broken = plan(&wanted, &observed, &context());
    let reasons: Vec<(NoticeKind, &str, &str)> = broken
        .notices
        .iter()
        .map(|n| (n.kind, n.tenant.as_str(), n.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                NoticeKind::Held,
                "idp-dev/old",
                "kept: idp-dev/x/values.yaml in its namespace has errors and may declare it (fix it; \
                 nothing is dropped while a file fails)"
            ),
            (
                NoticeKind::Held,
                "shop/cart",
                "kept: its values file shop/cart/values.yaml has errors (fix it; nothing is dropped while \
                 a file fails)"
            ),
        ]
    );
}

#[test]
fn isolation_drift_is_repaired() {
    let wanted = desired(&[
        spec("team-a", "a", Mode::Standard),
        spec("team-b", "b", Mode::Standard),
    ]);
    let (a, b) = (&wanted.tenants[0], &wanted.tenants[1]);
    let mut observed = empty_cluster();
    converge(&mut observed, a);
    converge(&mut observed, b);
    let (a_admin, a_write) = ("team-a-a-admin", "team-a-a-write");
    let b_read = "team-b-b-read";
    let a_db = observed.databases.get_mut("team-a-a").unwrap();
    a_db.settings = [("role".to_string(), "team-b-b-admin".to_string())].into();
    observed
        .roles
        .get_mut(a_write)
        .unwrap()
        .database_config
        .insert(
            "team-a-a".into(),
            [("statement_timeout".into(), "1ms".into())].into(),
        );
    let catalog = observed.database_catalogs.get_mut("team-a-a").unwrap();
    let grant = |class, name: &str, grantor: &str| ForeignGrant {
        class,
        schema: "public".into(),
        name: name.into(),
        arguments: if class == ObjectClass::Routine {
            "integer".into()
        } else {
            String::new()
        },
        grantee: b_read.into(),
        grantor: grantor.into(),
    };
    catalog.foreign_grants = vec![
        grant(ObjectClass::Schema, "public", a_admin),
        grant(ObjectClass::Table, "orders", a_admin),
        grant(ObjectClass::Table, "escape", a_write),
        grant(ObjectClass::Routine, "f", a_admin),
        // Not a tenant's role: not pgtenant's to judge.
        ForeignGrant {
            grantee: "bi_reader".into(),
            ..grant(ObjectClass::Table, "orders", a_admin)
        },
    ];
    catalog
        .owned_by_others
        .insert(a_write.into(), ["public.escape".to_string()].into());
    catalog.relations.push(ObservedRelation {
        schema: "public".into(),
        name: "escape".into(),
        is_sequence: false,
        owner: a_write.into(),
        acl: Acl::new(),
    });
    catalog
        .default_acls
        .get_mut(&(a_admin.to_string(), "r".to_string()))
        .unwrap()
        .acl
        .insert(Some(b_read.into()), ["SELECT".to_string()].into());

    let plan = plan(&wanted, &observed, &context());
    insta::assert_snapshot!("isolation_drift", render(&plan));
    assert!(
        plan.operations.iter().all(|op| op.tenant == a.id),
        "{}",
        render(&plan)
    );
    assert!(!render(&plan).contains("bi_reader"));
    assert!(plan.notices.is_empty(), "{:?}", plan.notices);

    // The same objects without the drift: nothing to do for either tenant.
    let mut clean = observed.clone();
    clean
        .databases
        .get_mut("team-a-a")
        .unwrap()
        .settings
        .clear();
    clean
        .roles
        .get_mut(a_write)
        .unwrap()
        .database_config
        .clear();
    converge(&mut clean, a);
    assert!(crate::plan(&wanted, &clean, &context()).is_converged());
    let _ = b;
}

#[test]
fn superuser_control_role_needs_no_memberships() {
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Standard)]);
    let mut observed = empty_cluster();
    observed.server.is_superuser = true;
    let plan = plan(&desired, &observed, &context());
    assert!(plan
        .operations
        .iter()
        .all(|op| !op.display().starts_with("GRANT \"idp-dev-my-db-")));
    assert!(
        plan.operations
            .iter()
            .all(|op| !op.display().contains(&format!("TO \"{CONTROL}\""))),
        "a superuser needs no CONNECT of its own"
    );
}

/// A CONNECT of its own spares the control role the walk over its 3N memberships that
/// PostgreSQL does on every connection to the database: planned for a new database and for one
/// that lacks it, never taken for drift, and the only thing the control role may hold there.
#[test]
fn the_control_role_connects_to_tenant_databases_directly() {
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Standard)]);
    let tenant = &desired.tenants[0];
    let grant = format!("GRANT CONNECT ON DATABASE \"idp-dev-my-db\" TO \"{CONTROL}\";");
    let fresh = plan(&desired, &empty_cluster(), &context());
    let op = fresh
        .operations
        .iter()
        .find(|op| op.display() == grant)
        .expect("a new database gets the control role's CONNECT");
    assert_eq!(op.phase, Phase::Database);
    assert!(op.why.starts_with("pgtenant's own"), "{}", op.why);

    let mut converged = empty_cluster();
    converge(&mut converged, tenant);
    assert!(plan(&desired, &converged, &context()).is_converged());

    let mut missing = converged.clone();
    let acl = &mut missing.databases.get_mut("idp-dev-my-db").unwrap().acl;
    acl.remove(&Some(CONTROL.to_string()));
    let repair = plan(&desired, &missing, &context());
    let shown: Vec<String> = repair.operations.iter().map(Operation::display).collect();
    assert_eq!(shown, [grant]);

    let mut more = converged.clone();
    let acl = &mut more.databases.get_mut("idp-dev-my-db").unwrap().acl;
    acl.get_mut(&Some(CONTROL.to_string()))
        .unwrap()
        .insert("CREATE".into());
    let shown: Vec<String> = plan(&desired, &more, &context())
        .operations
        .iter()
        .map(Operation::display)
        .collect();
    assert_eq!(
        shown,
        [format!(
            "REVOKE CREATE ON DATABASE \"idp-dev-my-db\" FROM \"{CONTROL}\" CASCADE;"
        )],
        "beyond CONNECT, the control role is compared like anyone"
    );
}

#[test]
fn adopting_an_existing_database_marks_it_and_issues_missing_credentials() {
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Protected)]);
    let tenant = &desired.tenants[0];
    let mut observed = empty_cluster();
    converge(&mut observed, tenant);
    observed.databases.get_mut("idp-dev-my-db").unwrap().comment = None;
    observed.stored_credentials.clear();
    observed.stored_paths.clear();

    // A store with nothing at all for any tenant is more likely the wrong store than lost
    // credentials: no password is changed, a person decides.
    let wrong_store = plan(&desired, &observed, &context());
    assert!(wrong_store
        .operations
        .iter()
        .all(|op| !matches!(op.action, Action::SetPassword { .. })));
    assert!(wrong_store
        .notices
        .iter()
        .any(|n| n.kind == NoticeKind::Blocked));
    assert!(!wrong_store.is_converged());

    converge(
        &mut observed,
        &DesiredTenant::from_spec(&spec("other", "app", Mode::Standard)),
    );
    observed
        .stored_credentials
        .retain(|path, _| path.as_str().starts_with("customer/other/"));
    let plan = plan(&desired, &observed, &context());
    let whys: Vec<&str> = plan.operations.iter().map(|op| op.why.as_str()).collect();
    assert!(whys.contains(&"adopt the existing database: mark it as managed by pgtenant"));
    let passwords = plan
        .operations
        .iter()
        .filter(|op| matches!(op.action, Action::SetPassword { .. }))
        .count();
    assert_eq!(passwords, 3);
    assert!(plan.operations.iter().all(|op| !op.destructive));
}

#[test]
fn uninspected_database_is_deferred_not_converged() {
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Standard)]);
    let mut observed = empty_cluster();
    converge(&mut observed, &desired.tenants[0]);
    observed.database_catalogs.clear();
    observed
        .uninspected
        .insert("idp-dev-my-db".into(), "permission denied".into());
    let plan = plan(&desired, &observed, &context());
    assert!(plan.operations.is_empty());
    assert!(!plan.is_converged());
}

#[test]
fn grace_rotation_twin_is_part_of_the_model() {
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Standard)]);
    let tenant = &desired.tenants[0];
    let mut observed = empty_cluster();
    converge(&mut observed, tenant);
    let write = tenant.role(RoleKind::Write).unwrap();
    observed.roles.insert(
        write.alternate.to_string(),
        ObservedRole {
            attributes: RoleAttributes::TENANT,
            comment: Some(Marker::alternate(tenant, RoleKind::Write).to_comment()),
            member_of: [write.name.to_string()].into(),
            members: Default::default(),
            config: Default::default(),
            membership_grantors: Default::default(),
            database_config: Default::default(),
        },
    );
    observed
        .roles
        .get_mut(write.name.as_str())
        .unwrap()
        .members
        .insert(write.alternate.to_string());
    observed
        .stored_credentials
        .get_mut(write.secret_path.as_ref().unwrap())
        .unwrap()
        .username = write.alternate.to_string();
    let converged = plan(&desired, &observed, &context());
    assert!(converged.is_converged(), "{}", render(&converged));

    // A twin that lost its membership gets it back; a stranger's login named in the store does not count.
    observed
        .roles
        .get_mut(write.alternate.as_str())
        .unwrap()
        .member_of
        .clear();
    observed
        .stored_credentials
        .get_mut(write.secret_path.as_ref().unwrap())
        .unwrap()
        .username = "someone-else".into();
    let repaired = render(&plan(&desired, &observed, &context()));
    assert!(
        repaired.contains(r#"GRANT "idp-dev-my-db-write" TO "idp-dev-my-db-write-alt";"#),
        "{repaired}"
    );
    assert!(
        repaired.contains(r#"ALTER ROLE "idp-dev-my-db-write" WITH PASSWORD"#),
        "{repaired}"
    );
}

fn dropped_databases(plan: &Plan) -> Vec<String> {
    plan.operations
        .iter()
        .filter(|op| op.display().starts_with("DROP DATABASE"))
        .map(|op| op.display())
        .collect()
}

fn held(plan: &Plan) -> Vec<String> {
    plan.notices
        .iter()
        .filter(|n| n.kind == NoticeKind::Held)
        .map(|n| n.reason.clone())
        .collect()
}

#[test]
fn drop_guards_hold_back_mass_and_accidental_removals() {
    let mut observed = empty_cluster();
    for (ns, name) in [("team", "a"), ("team", "b"), ("team", "c"), ("other", "x")] {
        converge(
            &mut observed,
            &DesiredTenant::from_spec(&spec(ns, name, Mode::Standard)),
        );
    }
    let mut context = context();

    // An empty repo (the wrong directory) drops nothing.
    let empty = plan(&desired(&[]), &observed, &context);
    assert!(dropped_databases(&empty).is_empty());
    assert!(
        held(&empty)[0].contains("no database is declared"),
        "{:?}",
        held(&empty)
    );

    // Two databases removed, more than the default of one per run: both held.
    let keep_a = desired(&[
        spec("team", "a", Mode::Standard),
        spec("other", "x", Mode::Standard),
    ]);
    let two = plan(&keep_a, &observed, &context);
    assert!(dropped_databases(&two).is_empty());
    assert_eq!(held(&two).len(), 2);
    assert!(held(&two)[0].contains("--max-drops 2"), "{:?}", held(&two));
    context.guard.max_drops = 2;
    assert_eq!(
        dropped_databases(&plan(&keep_a, &observed, &context)).len(),
        2
    );

    // A namespace folder that vanished whole is held even within --max-drops.
    let without_other = desired(&[
        spec("team", "a", Mode::Standard),
        spec("team", "b", Mode::Standard),
        spec("team", "c", Mode::Standard),
    ]);
    let vanished = plan(&without_other, &observed, &context);
    assert!(dropped_databases(&vanished).is_empty());
    assert!(held(&vanished)[0].contains("namespace other declares no database"));
    context.guard.allow_namespace_removal = vec!["other".into()];
    assert_eq!(
        dropped_databases(&plan(&without_other, &observed, &context)),
        [r#"DROP DATABASE "other-x" WITH (FORCE);"#]
    );
}

#[test]
fn a_database_a_declared_tenant_maps_to_is_never_dropped() {
    // `a-b/c` renamed in the repo to `a/b-c`: both are database `a-b-c`.
    let mut observed = empty_cluster();
    converge(
        &mut observed,
        &DesiredTenant::from_spec(&spec("a-b", "c", Mode::Standard)),
    );
    let now = desired(&[spec("a", "b-c", Mode::Standard)]);
    let plan = plan(&now, &observed, &context());
    assert!(
        plan.operations.iter().all(|op| !op.destructive),
        "{}",
        render(&plan)
    );
}

#[test]
fn a_removal_beside_a_new_name_hints_at_a_rename() {
    let mut observed = empty_cluster();
    converge(
        &mut observed,
        &DesiredTenant::from_spec(&spec("shop", "cart", Mode::Standard)),
    );
    let renamed = desired(&[spec("shop", "basket", Mode::Standard)]);
    let plan = plan(&renamed, &observed, &context());
    let drop = plan
        .operations
        .iter()
        .find(|op| op.display().starts_with("DROP DATABASE"))
        .unwrap();
    assert!(
        drop.why
            .contains("shop/basket is new in the same namespace"),
        "{}",
        drop.why
    );
    assert!(
        drop.why.contains("a rename is a drop and a create"),
        "{}",
        drop.why
    );
}

#[test]
fn presets_on_an_empty_cluster() {
    let mut settings = BTreeMap::new();
    settings.insert(
        "app".to_string(),
        pgtenant_spec::RoleSettings {
            connection_limit: Some(20),
            statement_timeout_ms: Some(30_000),
            log_statements: None,
        },
    );
    let migrator = DatabaseSpec {
        preset: pgtenant_spec::Preset::AppMigrator,
        extensions: vec![
            "pgcrypto".into(),
            "postgres_fdw".into(),
            "no_such_ext".into(),
        ],
        roles: settings,
        ..spec("shop", "checkout", Mode::Protected)
    };
    let owner = DatabaseSpec {
        preset: pgtenant_spec::Preset::SchemaOwner,
        schemas: vec!["reporting".into()],
        ..spec("notify", "api", Mode::Standard)
    };
    let mut observed = empty_cluster();
    observed.available_extensions = [
        ("pgcrypto".to_string(), true),
        ("postgres_fdw".to_string(), false),
    ]
    .into();
    let plan = plan(&desired(&[migrator, owner]), &observed, &context());
    insta::assert_snapshot!(render(&plan));
}

#[test]
fn postgresql_16_memberships_carry_options_and_are_revoked_per_grantor() {
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Standard)]);
    let mut observed = empty_cluster();
    observed.server.version_num = 160_004;
    let fresh = render(&plan(&desired, &observed, &context()));
    // The control role's borrowed membership is a plain GRANT (SET and INHERIT default to true on
    // 16, granted by the control role, which has ADMIN OPTION on the roles it created).
    assert!(
        fresh.contains(r#"GRANT "idp-dev-my-db-admin" TO "pgtenant";"#),
        "{fresh}"
    );

    converge(&mut observed, &desired.tenants[0]);
    let read = observed.roles.get_mut("idp-dev-my-db-read").unwrap();
    read.member_of.insert("pg_read_all_data".into());
    read.membership_grantors.insert(
        "pg_read_all_data".into(),
        ["postgres".to_string(), "dba".to_string()].into(),
    );
    let revoked = render(&plan(&desired, &observed, &context()));
    assert!(
        revoked
            .contains(r#"REVOKE "pg_read_all_data" FROM "idp-dev-my-db-read" GRANTED BY "dba";"#),
        "{revoked}"
    );
    assert!(revoked
        .contains(r#"REVOKE "pg_read_all_data" FROM "idp-dev-my-db-read" GRANTED BY "postgres";"#));
}

#[test]
fn scope_keeps_shared_statements_and_ignores_other_tenants() {
    let a = spec("team", "a", Mode::Standard);
    let b = spec("team", "b", Mode::Standard);
    let desired = desired(&[a, b]);
    let mut observed = empty_cluster();
    for tenant in &desired.tenants {
        converge(&mut observed, tenant);
    }
    // A's read role was let into B's admin role: both tenants see it.
    observed
        .roles
        .get_mut("team-a-read")
        .unwrap()
        .member_of
        .insert("team-b-admin".into());
    observed
        .roles
        .get_mut("team-b-admin")
        .unwrap()
        .members
        .insert("team-a-read".into());
    let mut scoped = context();
    scoped.scope = ["team/b".to_string()].into();
    let plan_b = plan(&desired, &observed, &scoped);
    assert_eq!(
        plan_b
            .operations
            .iter()
            .map(|op| op.display())
            .collect::<Vec<_>>(),
        [r#"REVOKE "team-b-admin" FROM "team-a-read";"#]
    );
    assert!(plan_b.operations.iter().all(|op| op.tenant == "team/b"));
}

#[test]
fn a_changed_preset_blocks_the_tenant_instead_of_half_converting_it() {
    let idp = spec("shop", "cart", Mode::Standard);
    let mut observed = empty_cluster();
    converge(&mut observed, &DesiredTenant::from_spec(&idp));
    let migrated = DatabaseSpec {
        preset: pgtenant_spec::Preset::AppMigrator,
        ..idp
    };
    let plan = plan(&desired(&[migrated]), &observed, &context());
    assert!(plan.operations.is_empty(), "{}", render(&plan));
    let blocked = plan
        .notices
        .iter()
        .find(|n| n.kind == NoticeKind::Blocked)
        .unwrap();
    assert!(
        blocked.reason.contains("created with another preset"),
        "{}",
        blocked.reason
    );
}

fn phases_of<'a>(plan: &'a Plan, tenant: &str) -> Vec<(Phase, &'a Action)> {
    plan.operations
        .iter()
        .filter(|op| op.tenant == tenant)
        .map(|op| (op.phase, &op.action))
        .collect()
}

#[test]
fn a_removed_standard_database_is_backed_up_with_its_logins_stopped_before_its_drop() {
    let kept = spec("idp-dev", "my-db", Mode::Standard);
    let removed = spec("idp-dev", "old", Mode::Standard);
    let mut observed = empty_cluster();
    for s in [&kept, &removed] {
        converge(&mut observed, &DesiredTenant::from_spec(s));
    }
    let wanted = desired(std::slice::from_ref(&kept));
    let now = plan(&wanted, &observed, &context());
    let steps = phases_of(&now, "idp-dev/old");
    let phases: Vec<Phase> = steps.iter().map(|(phase, _)| *phase).collect();
    assert_eq!(
        &phases[..3],
        [Phase::StopLogins, Phase::FinalBackup, Phase::Drop],
        "{}",
        render(&now)
    );
    assert!(matches!(
        steps[0].1,
        Action::StopLogins { database, roles }
            if database.as_str() == "idp-dev-old" && roles.len() == 3
    ));
    assert!(matches!(
        steps[1].1,
        Action::FinalBackup { database, retention_days: 7, .. } if database.as_str() == "idp-dev-old"
    ));
    // The control role takes the database over in a borrowing transaction, then drops it.
    let sql_of = |i: usize| match steps[i].1 {
        Action::Sql { sql, .. } => sql.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (2..6).map(sql_of).collect::<Vec<_>>(),
        [
            r#"GRANT "idp-dev-old-admin" TO "pgtenant""#,
            r#"ALTER DATABASE "idp-dev-old" OWNER TO "pgtenant""#,
            r#"REVOKE "idp-dev-old-admin" FROM "pgtenant""#,
            r#"DROP DATABASE "idp-dev-old" WITH (FORCE)"#,
        ]
    );
    let backup = &now.operations[now
        .operations
        .iter()
        .position(|op| op.phase == Phase::FinalBackup)
        .unwrap()];
    assert_eq!(
        backup.display(),
        "-- final backup of idp-dev-old to the trash, kept 7 days"
    );
    assert!(!backup.destructive, "a backup destroys nothing");
    assert!(phases.iter().all(|phase| phase.is_removal()));
}

#[test]
fn a_final_backup_without_a_tier_of_its_own_is_kept_for_the_platform_tier() {
    let kept = spec("idp-dev", "my-db", Mode::Standard);
    let removed = DesiredTenant::from_spec(&spec("idp-dev", "old", Mode::Standard));
    let mut observed = empty_cluster();
    converge(&mut observed, &DesiredTenant::from_spec(&kept));
    converge(&mut observed, &removed);
    let untiered = Marker {
        environment: None,
        ..Marker::database(&removed)
    };
    observed.databases.get_mut("idp-dev-old").unwrap().comment = Some(untiered.to_comment());
    let context = PlanContext {
        platform_environment: Some(pgtenant_spec::Environment::Production),
        ..context()
    };
    let now = plan(&desired(std::slice::from_ref(&kept)), &observed, &context);
    let days = pgtenant_spec::Environment::Production.retention_days();
    assert!(
        now.operations.iter().any(|op| matches!(
            op.action,
            Action::FinalBackup { retention_days, environment: pgtenant_spec::Environment::Production, .. }
                if retention_days == days
        )),
        "{}",
        render(&now)
    );
}

#[test]
fn an_interrupted_password_change_is_settled_before_anything_else() {
    let tenant_spec = spec("idp-dev", "my-db", Mode::Standard);
    let tenant = DesiredTenant::from_spec(&tenant_spec);
    let mut observed = empty_cluster();
    converge(&mut observed, &tenant);
    let wanted = desired(std::slice::from_ref(&tenant_spec));
    assert!(plan(&wanted, &observed, &context()).is_converged());

    let read = tenant.role(RoleKind::Read).unwrap();
    let secret_path = read.secret_path.clone().unwrap();
    observed
        .stored_paths
        .insert(crate::rotate::journal_path(&secret_path));
    let now = plan(&wanted, &observed, &context());
    assert!(!now.is_converged());
    let first = &now.operations[0];
    assert_eq!(first.phase, Phase::PasswordRecovery);
    assert_eq!(
        first.action,
        Action::FinishPasswordChange {
            role: read.name.clone(),
            secret_path
        }
    );
    assert_eq!(
        first.why,
        "interrupted password change for idp-dev-my-db-read: run `pgtenant apply`"
    );
    assert!(!first.phase.is_removal());
    // Scoped out, it is not planned.
    let elsewhere = PlanContext {
        scope: ["shop/cart".to_string()].into(),
        ..context()
    };
    assert!(plan(&wanted, &observed, &elsewhere).operations.is_empty());
}

#[test]
fn pooled_tenants_get_the_pooled_endpoint_in_their_credentials() {
    let pooler = pgtenant_secrets::PoolerAddress {
        endpoint: "pooler.internal".into(),
        port: 6432,
    };
    let pooled_context = PlanContext {
        pooler: Some(pooler.clone()),
        ..context()
    };
    let tenant_spec = spec("idp-dev", "my-db", Mode::Standard);
    let tenant = DesiredTenant::from_spec(&tenant_spec);

    // A new tenant: its new credentials carry the pooled endpoint.
    let new = plan(
        &desired(std::slice::from_ref(&tenant_spec)),
        &empty_cluster(),
        &pooled_context,
    );
    let poolers: Vec<_> = new
        .operations
        .iter()
        .filter_map(|op| match &op.action {
            Action::SetPassword { pooler, .. } => Some(pooler.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(poolers, vec![Some(pooler.clone()); 3], "{}", render(&new));

    // Converged without a pooler; a pooler added: the stored credentials are refreshed.
    let mut observed = empty_cluster();
    converge(&mut observed, &tenant);
    let wanted = desired(std::slice::from_ref(&tenant_spec));
    assert!(plan(&wanted, &observed, &context()).is_converged());
    let now = plan(&wanted, &observed, &pooled_context);
    let refreshed: Vec<_> = now
        .operations
        .iter()
        .map(|op| (&op.action, op.why.as_str()))
        .collect();
    assert_eq!(refreshed.len(), 3, "{}", render(&now));
    for (action, why) in refreshed {
        assert!(
            matches!(action, Action::StoreCredential { pooler: Some(p), .. } if *p == pooler),
            "{action:?}"
        );
        assert_eq!(
            why,
            "stored pooled endpoint (none) differs from pooler.internal:6432"
        );
    }

    // `pooling: none` opts out: no pooled endpoint, so nothing to refresh.
    let opted_out = DatabaseSpec {
        pooling: Some(pgtenant_spec::Pooling::Off),
        ..tenant_spec.clone()
    };
    let wanted = desired(std::slice::from_ref(&opted_out));
    assert!(plan(&wanted, &observed, &pooled_context).is_converged());
    assert_eq!(
        pooled_context.pooler_for(&DesiredTenant::from_spec(&opted_out)),
        None
    );
}

#[test]
fn auth_query_gives_every_tenant_database_the_lookup_function() {
    let lookup = PlanContext {
        pooler_lookup: true,
        ..context()
    };
    let tenant_spec = spec("idp-dev", "my-db", Mode::Standard);
    let tenant = DesiredTenant::from_spec(&tenant_spec);
    let wanted = desired(std::slice::from_ref(&tenant_spec));
    // An existing (adopted or older) database without the function, a superuser control role.
    let mut observed = empty_cluster();
    observed.server.is_superuser = true;
    converge(&mut observed, &tenant);
    let lookup_ops = |plan: Plan| Plan {
        operations: plan
            .operations
            .into_iter()
            .filter(|op| op.phase == Phase::Extensions)
            .collect(),
        notices: plan.notices,
    };
    assert!(lookup_ops(plan(&wanted, &observed, &context()))
        .operations
        .is_empty());
    let now = lookup_ops(plan(&wanted, &observed, &lookup));
    insta::assert_snapshot!("pooler_lookup", render(&now));
    assert_eq!(now.operations.len(), 8);
    assert!(now
        .operations
        .iter()
        .all(|op| op.database.as_ref() == Some(&tenant.database) && op.run_as.is_none()));
    // Once it is there (the current version), nothing more.
    observed
        .database_catalogs
        .get_mut("idp-dev-my-db")
        .unwrap()
        .pooler_lookup = Some(sql::POOLER_LOOKUP_MARKER.to_owned());
    assert!(lookup_ops(plan(&wanted, &observed, &lookup))
        .operations
        .is_empty());
    // Another version is replaced.
    observed
        .database_catalogs
        .get_mut("idp-dev-my-db")
        .unwrap()
        .pooler_lookup = Some("something else".to_owned());
    assert_eq!(
        lookup_ops(plan(&wanted, &observed, &lookup))
            .operations
            .len(),
        8
    );
}

/// Tenants are applied concurrently: a new tenant's grant of CONNECT to the lookup role must not
/// depend on another tenant having created it first.
#[test]
fn auth_query_has_every_new_tenant_create_the_lookup_role_before_its_grant() {
    let lookup = PlanContext {
        pooler_lookup: true,
        ..context()
    };
    let specs = [
        spec("team", "a", Mode::Standard),
        spec("team", "b", Mode::Standard),
    ];
    let mut observed = empty_cluster();
    observed.server.is_superuser = true;
    let now = plan(&desired(&specs), &observed, &lookup);
    let create = sql::pooler_lookup_role();
    for tenant in ["team/a", "team/b"] {
        let ops: Vec<&Operation> = now
            .operations
            .iter()
            .filter(|op| op.tenant == tenant)
            .collect();
        let position = |wanted: &dyn Fn(&str) -> bool| {
            ops.iter()
                .position(|op| matches!(&op.action, Action::Sql { sql, .. } if wanted(sql)))
        };
        let created = position(&|sql| sql == create).expect("the tenant creates the lookup role");
        let granted = position(&|sql| {
            sql.starts_with("GRANT CONNECT") && sql.contains(sql::POOLER_LOOKUP_ROLE)
        })
        .expect("the tenant grants CONNECT to the lookup role");
        assert!(created < granted, "{tenant}: {}", render(&now));
    }
}

#[test]
fn auth_query_is_refused_without_a_superuser_control_role() {
    let lookup = PlanContext {
        pooler_lookup: true,
        ..context()
    };
    let tenant_spec = spec("idp-dev", "my-db", Mode::Standard);
    let wanted = desired(std::slice::from_ref(&tenant_spec));
    let now = plan(&wanted, &empty_cluster(), &lookup);
    assert!(now.operations.is_empty(), "{}", render(&now));
    let blocked: Vec<&str> = now
        .notices
        .iter()
        .filter(|n| n.kind == NoticeKind::Blocked)
        .map(|n| n.reason.as_str())
        .collect();
    assert_eq!(blocked.len(), 1, "{:?}", now.notices);
    for needed in ["auth: query", "superuser", "auth: file", CONTROL] {
        assert!(blocked[0].contains(needed), "{needed}: {}", blocked[0]);
    }
}

/// A platform iteration count other than the one each stored credential records: every login's
/// password is set again (the same one: the executor reuses a stored password of the same login),
/// nothing else; a credential that records the new count plans nothing.
#[test]
fn a_changed_scram_iteration_count_sets_each_logins_password_again() {
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Standard)]);
    let mut observed = empty_cluster();
    converge(&mut observed, &desired.tenants[0]);
    let fewer = PlanContext {
        scram_iterations: 256,
        ..context()
    };
    let planned = plan(&desired, &observed, &fewer);
    let logins: Vec<&str> = desired.tenants[0]
        .roles
        .iter()
        .filter(|r| r.secret_path.is_some())
        .map(|r| r.name.as_str())
        .collect();
    assert!(!logins.is_empty());
    let set: Vec<&str> = planned
        .operations
        .iter()
        .map(|op| match &op.action {
            Action::SetPassword { role, sql, .. } => {
                assert!(sql.starts_with("ALTER ROLE"), "{sql}");
                assert!(op.why.contains("4096 iterations"), "{}", op.why);
                role.as_str()
            }
            other => panic!("only passwords are set again: {other:?}"),
        })
        .collect();
    assert_eq!(set, logins, "{}", render(&planned));
    for credential in observed.stored_credentials.values_mut() {
        credential.scram_iterations = 256;
    }
    assert!(plan(&desired, &observed, &fewer).is_converged());
    assert!(!plan(&desired, &observed, &context()).is_converged());
}

#[test]
fn roles_new_on_this_cluster_take_over_their_stored_credentials_with_this_clusters_endpoint() {
    // The store holds the tenant's credentials from another cluster (a moved tenant, or a cluster
    // rebuilt with the same store): the roles are created with the stored passwords, and the
    // stored connection details are this cluster's in the same plan, not in a second one.
    let desired = desired(&[spec("idp-dev", "my-db", Mode::Standard)]);
    let tenant = &desired.tenants[0];
    let mut elsewhere = empty_cluster();
    converge(&mut elsewhere, tenant);
    let mut observed = empty_cluster();
    observed.stored_paths = elsewhere.stored_paths.clone();
    observed.stored_credentials = elsewhere.stored_credentials.clone();
    for stored in observed.stored_credentials.values_mut() {
        stored.endpoint = "old.internal".into();
    }
    let logins: BTreeSet<&SecretPath> = tenant
        .login_roles()
        .filter_map(|r| r.secret_path.as_ref())
        .collect();
    // A login whose stored username is another role's gets a new password, which carries this
    // cluster's endpoint already: nothing more to store for it.
    let replaced = tenant.login_roles().last().unwrap();
    let replaced_path = replaced.secret_path.clone().unwrap();
    observed
        .stored_credentials
        .get_mut(&replaced_path)
        .unwrap()
        .username = "someone-else".into();

    let planned = plan(&desired, &observed, &context());
    let created: BTreeSet<&SecretPath> = planned
        .operations
        .iter()
        .filter_map(|op| match &op.action {
            Action::SetPassword { secret_path, .. } => Some(secret_path),
            _ => None,
        })
        .collect();
    assert_eq!(created, logins, "{}", render(&planned));
    let stored: Vec<(&SecretPath, &str)> = planned
        .operations
        .iter()
        .filter_map(|op| match &op.action {
            Action::StoreCredential { secret_path, .. } => Some((secret_path, op.why.as_str())),
            _ => None,
        })
        .collect();
    let expected: Vec<&SecretPath> = logins
        .iter()
        .copied()
        .filter(|p| **p != replaced_path)
        .collect();
    assert_eq!(
        stored.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        expected,
        "{}",
        render(&planned)
    );
    assert!(stored.iter().all(|(_, why)| why
        == &"stored connection details (old.internal:5432/idp-dev-my-db) differ from db.internal:5432/idp-dev-my-db"));
}
