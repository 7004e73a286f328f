//! The planner, per tenant: its database — existence, owner, marker, settings, ACL.

use super::*;

impl TenantPlanner<'_> {
    /// Returns whether this plan creates the database.
    pub(super) fn database(&mut self) -> bool {
        let tenant = self.tenant;
        let owner = tenant.owner();
        let observed = self.observed.databases.get(tenant.database.as_str());
        // The statements after CREATE/ALTER OWNER run as the owner (SET LOCAL ROLE, in a transaction
        // that borrows the owner when the control role is not a superuser): PostgreSQL checks the
        // owner's rights at once. A superuser control role runs an existing database's repairs as itself.
        let fresh = observed.is_none() || self.control_role().is_some();
        let mut current = match observed {
            Some(db) => db.clone(),
            None => {
                let control = self.control_role();
                self.push(
                    Phase::Database,
                    Action::Sql {
                        sql: match &control {
                            // Without a membership in the owner a non-superuser cannot name it as
                            // the owner: it creates the database for itself and hands it over.
                            Some(_) => sql::create_database_owned_by_creator(&tenant.database),
                            None => sql::create_database(&tenant.database, owner),
                        },
                        transactional: false,
                    },
                    "declared in the spec; the database does not exist",
                );
                if let Some(control) = control {
                    fresh_database(&control)
                } else {
                    fresh_database(owner)
                }
            }
        };
        if current.owner != owner.as_str() {
            let why = if observed.is_none() {
                format!("the control role `{}` created it for itself; the tenant's owner role `{owner}` must own it", current.owner)
            } else {
                format!(
                    "owned by `{}`; the tenant's owner role `{owner}` must own it",
                    current.owner
                )
            };
            // PostgreSQL 15: the current owner (or a member of it) with CREATEDB, a member of the new
            // owner. A current owner among the tenant's own roles is borrowed too; another's is not.
            let mut borrowed = vec![owner.clone()];
            if let Some(own) = tenant
                .roles
                .iter()
                .find(|r| r.name.as_str() == current.owner)
            {
                borrowed.push(own.name.clone());
            }
            self.push_borrowing(
                Phase::Database,
                &borrowed,
                vec![(sql::alter_database_owner(&tenant.database, owner), why)],
            );
            // ALTER … OWNER hands the old owner's ACL entry to the new owner.
            current.acl = transfer_owner(current.acl, &current.owner, owner.as_str());
            current.owner = owner.as_str().to_string();
        }
        if !current.allow_connections {
            self.push_database_sql(
                fresh,
                sql::alter_database(&tenant.database, "ALLOW_CONNECTIONS true"),
                "connections to the database were disabled; its roles must be able to connect",
            );
        }
        if current.connection_limit != tenant.connection_limit {
            self.push_database_sql(
                fresh,
                sql::alter_database(
                    &tenant.database,
                    &format!("CONNECTION LIMIT {}", tenant.connection_limit),
                ),
                format!(
                    "connection limit is {}, the spec says {}",
                    current.connection_limit, tenant.connection_limit
                ),
            );
        }
        if !current.settings.is_empty() {
            self.push_database_sql(
                fresh,
                sql::reset_database_settings(&tenant.database),
                format!(
                    "the database has session defaults ({}) that the spec does not declare: they apply to \
                     every session in it, pgtenant's and other tenants' roles included (`ALTER DATABASE … SET role` \
                     would make them act as another role)",
                    settings_list(&current.settings)
                ),
            );
        }
        let marker = Marker::database(tenant);
        if current.marker().as_ref() != Some(&marker) {
            let why = match (observed, current.marker()) {
                (None, _) => "mark the database as managed by pgtenant, with its mode",
                (Some(_), None) => "adopt the existing database: mark it as managed by pgtenant",
                (Some(_), Some(old)) if old.mode != marker.mode => "the deletion mode changed",
                (Some(_), Some(_)) => "the database's pgtenant marker is out of date",
            };
            self.push_database_sql(
                fresh,
                sql::comment_on_database(&tenant.database, &marker),
                why,
            );
        }
        let mut wanted = role_acl(tenant, |access| &access.database);
        let object = format!("DATABASE {}", tenant.database.quote());
        let (acl, control_connects) = self.without_control_connect(current.acl);
        if let Some(control) = self.control_role() {
            // Compared without its CONNECT: whatever else it holds is revoked, that one kept.
            wanted.entry(control).or_default();
        }
        if self.context.pooler_lookup {
            // pgbouncer's auth_user runs the lookup function inside the database the client asks for.
            let lookup = Ident::new(sql::POOLER_LOOKUP_ROLE);
            if !acl
                .get(&Some(lookup.as_str().to_string()))
                .is_some_and(|held| held.contains("CONNECT"))
            {
                // Before the database phase (its own committed step): as the control role, since
                // the owner of a new database cannot create roles.
                self.push_sql(
                    Phase::Roles,
                    sql::pooler_lookup_role(),
                    "the pooler's auth_query logs in as its lookup role, which must exist before it can connect",
                );
            }
            wanted.insert(lookup, BTreeSet::from(["CONNECT"]));
        }
        for change in diff_acl(&acl, &wanted, true) {
            let (statement, why) = change.render(&object, "the database");
            self.push_database_sql(fresh, statement, why);
        }
        if let (Some(control), false) = (self.control_role(), control_connects) {
            self.push_database_sql(
                fresh,
                sql::grant_on(&BTreeSet::from(["CONNECT"]), &object, std::slice::from_ref(&control)),
                format!(
                    "pgtenant's own: the control role `{control}` connects to the database directly \
                     (through its memberships in the tenant's roles, every connection would walk them all)"
                ),
            );
        }
        observed.is_none()
    }

    /// A database-phase statement on the control connection, as the tenant's owner when `as_owner`.
    fn push_database_sql(&mut self, as_owner: bool, sql: String, why: impl Into<String>) {
        let run_as = as_owner.then(|| self.tenant.owner().clone());
        self.push_at(
            Phase::Database,
            run_as,
            Action::Sql {
                sql,
                transactional: true,
            },
            why,
        );
    }

    /// `acl` without the control role's own `CONNECT` (pgtenant's, never drift), and whether it
    /// was there. Anything else the control role holds is compared like any other grantee's.
    fn without_control_connect(&self, mut acl: Acl) -> (Acl, bool) {
        let Some(control) = self.control_role() else {
            return (acl, false);
        };
        let key = Some(control.as_str().to_string());
        let held = acl.get_mut(&key).is_some_and(|held| held.remove("CONNECT"));
        if acl.get(&key).is_some_and(BTreeSet::is_empty) {
            acl.remove(&key);
        }
        (acl, held)
    }
}
