//! The planner, per tenant: inside its database — ownership of objects, grants to other tenants'
//! roles, schemas, existing relations, default privileges, extensions.

use super::*;

impl TenantPlanner<'_> {
    pub(super) fn inside_database(&mut self, created: bool) {
        let tenant = self.tenant;
        let owner = tenant.owner().as_str().to_string();
        let catalog = match self
            .observed
            .database_catalogs
            .get(tenant.database.as_str())
        {
            Some(catalog) => catalog.clone(),
            None if created => fresh_catalog(),
            // The reader inspects every declared database that exists; without it we cannot judge.
            None => return,
        };
        let reassigned = self.reassign_objects(&catalog);
        let mut catalog = catalog;
        for relation in &mut catalog.relations {
            if reassigned.contains(&relation.owner) {
                relation.owner = owner.clone();
            }
        }
        self.foreign_grants(&catalog, &reassigned);
        let mut schemas = catalog.schemas.clone();
        if let Some(public) = schemas.get_mut("public") {
            if public.owner != owner {
                self.push_sql(
                    Phase::Schemas,
                    sql::alter_schema_owner(&Ident::new("public"), tenant.owner()),
                    format!(
                        "schema public is owned by `{}`; the tenant's owner role must own it",
                        public.owner
                    ),
                );
                public.acl = transfer_owner(std::mem::take(&mut public.acl), &public.owner, &owner);
                public.owner = owner.clone();
            }
            if public.acl.contains_key(&None) {
                self.push_sql(
                    Phase::Schemas,
                    sql::revoke_all_on(
                        &format!("SCHEMA {}", Ident::new("public").quote()),
                        &[None],
                    ),
                    "PUBLIC must not use schema public: only the tenant's roles may",
                );
            }
        }
        for schema in &tenant.schemas {
            match schemas.get_mut(schema.as_str()) {
                None => {
                    self.push_sql(
                        Phase::Schemas,
                        sql::create_schema(schema, tenant.owner()),
                        format!("schema {schema} is declared and does not exist"),
                    );
                    // A new schema gets the owner's default privileges for schemas at once.
                    schemas.insert(
                        schema.as_str().to_string(),
                        self.new_schema_by_owner(&catalog, &owner),
                    );
                }
                Some(existing) if existing.owner != owner => {
                    self.push_sql(
                        Phase::Schemas,
                        sql::alter_schema_owner(schema, tenant.owner()),
                        format!(
                            "schema {schema} is owned by `{}`; the tenant's owner role must own it",
                            existing.owner
                        ),
                    );
                    existing.acl =
                        transfer_owner(std::mem::take(&mut existing.acl), &existing.owner, &owner);
                    existing.owner = owner.clone();
                }
                Some(_) => {}
            }
        }
        let wanted_schema = role_acl(tenant, |access| &access.schema);
        for (name, schema) in schemas.iter().filter(|(_, s)| s.owner == owner) {
            let object = format!("SCHEMA {}", Ident::new(name.clone()).quote());
            for change in diff_acl(&schema.acl, &wanted_schema, false) {
                let (statement, why) = change.render(&object, &format!("schema {name}"));
                self.push_sql(Phase::Schemas, statement, why);
            }
            self.existing_relations(&catalog, name);
        }
        self.default_privileges(&catalog);
        self.extensions(&catalog);
        self.pooler_lookup(&catalog);
    }

    /// `pooler.auth: query` needs a lookup function that reads `pg_authid`, which only a
    /// superuser's SECURITY DEFINER function can (on RDS and Aurora not even the master user):
    /// with a control role that is not one, the tenant is refused rather than left without a way
    /// through the pooler.
    pub(super) fn pooler_lookup_refused(&self) -> Option<String> {
        (self.context.pooler_lookup && !self.observed.server.is_superuser).then(|| {
            format!(
                "the pooler's `auth: query` needs the lookup function `{}.{}` in every tenant database, \
                 and only a superuser can create one that reads the password verifiers (pg_authid); the \
                 control role `{}` is not a superuser. Use `auth: file` (the default: pgtenant writes the \
                 verifiers into pgbouncer's auth_file), or run pgtenant with a superuser control role",
                sql::POOLER_SCHEMA,
                sql::POOLER_LOOKUP_FUNCTION,
                self.observed.server.current_user
            )
        })
    }

    /// With `auth: query`, the database must have the current lookup function: a database
    /// pgtenant did not create (adopted, restored) gets it too.
    pub(super) fn pooler_lookup(&mut self, catalog: &DatabaseCatalog) {
        if !self.context.pooler_lookup {
            return;
        }
        let why = match catalog.pooler_lookup.as_deref() {
            Some(sql::POOLER_LOOKUP_MARKER) => return,
            Some(_) => "the pooler's lookup function is of another version",
            None => {
                "the pooler authenticates with auth_query, and the database has no lookup function"
            }
        };
        let logins: Vec<Ident> = self
            .tenant
            .login_roles()
            .flat_map(|role| [role.name.clone(), role.alternate.clone()])
            .collect();
        for statement in sql::pooler_lookup(&logins) {
            // As the control role (a superuser, see `pooler_lookup_refused`): it owns the function.
            self.push_at(
                Phase::Extensions,
                None,
                Action::Sql {
                    sql: statement,
                    transactional: true,
                },
                why,
            );
        }
    }

    /// Objects owned by the tenant's roles other than its owner role go to the owner role (`REASSIGN
    /// OWNED`, as the control role, a member of both): one owner per tenant is what its read and
    /// write roles' grants and default privileges cover, in every preset. A login that owns a
    /// database too is left to a person, since REASSIGN OWNED would hand over that database as well.
    /// Returns the roles whose objects are reassigned.
    pub(super) fn reassign_objects(&mut self, catalog: &DatabaseCatalog) -> BTreeSet<String> {
        let owner = self.tenant.owner().clone();
        let mut reassigned = BTreeSet::new();
        let mut statements = Vec::new();
        for (role, objects) in &catalog.owned_by_others {
            let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
            let owned_databases: Vec<&str> = self
                .observed
                .databases
                .iter()
                .filter(|(_, d)| &d.owner == role)
                .map(|(name, _)| name.as_str())
                .collect();
            if !owned_databases.is_empty() {
                self.blocked.push(format!(
                    "`{role}` owns objects in the database ({}) that must belong to the owner role `{owner}`, and \
                     also owns database(s) {}: REASSIGN OWNED would hand those over too, so change the objects' \
                     owner yourself (ALTER … OWNER TO \"{owner}\")",
                    summarize(&objects),
                    owned_databases.join(", ")
                ));
                continue;
            }
            statements.push((
                sql::reassign_owned(&Ident::new(role.clone()), &owner),
                format!(
                    "`{role}` owns {} object(s) here ({}): every object of the tenant belongs to its owner \
                     role `{owner}`, or the tenant's other roles get no grants on it (a session that left the \
                     owner role with SET ROLE NONE?)",
                    objects.len(),
                    summarize(&objects)
                ),
            ));
            reassigned.insert(role.clone());
        }
        // REASSIGN OWNED needs the privileges of both roles.
        let borrowed: Vec<Ident> = reassigned
            .iter()
            .map(|r| Ident::new(r.clone()))
            .chain([owner])
            .collect();
        if !statements.is_empty() {
            self.push_borrowing(Phase::Schemas, &borrowed, statements);
        }
        reassigned
    }

    /// Privileges another tenant's roles hold on this tenant's schemas, relations and routines break
    /// isolation (and keep that tenant's roles from being dropped): revoked, as the role that granted
    /// them. Grants to roles pgtenant does not manage are left alone.
    pub(super) fn foreign_grants(
        &mut self,
        catalog: &DatabaseCatalog,
        reassigned: &BTreeSet<String>,
    ) {
        let owner = self.tenant.owner().as_str().to_string();
        let control = self.observed.server.current_user.clone();
        let own: BTreeSet<&str> = self
            .tenant
            .roles
            .iter()
            .flat_map(|r| [r.name.as_str(), r.alternate.as_str()])
            .collect();
        // (class, schema, grantee, run as) → (the grantee's tenant, [(name, arguments)]).
        type Key = (ObjectClass, String, String, Option<String>);
        type Objects<'c> = (String, Vec<(&'c str, &'c str)>);
        let mut grouped: BTreeMap<Key, Objects<'_>> = BTreeMap::new();
        for grant in &catalog.foreign_grants {
            let Some(other) = self.other_tenant_of(&grant.grantee) else {
                continue;
            };
            let grantor = if reassigned.contains(&grant.grantor) {
                owner.as_str()
            } else {
                grant.grantor.as_str()
            };
            let run_as = if own.contains(grantor) {
                Some(grantor.to_string())
            } else if grantor == control {
                None
            } else {
                self.blocked.push(format!(
                    "`{}` (a role of tenant {other}) holds privileges on {} {}.{} granted by `{grantor}`, \
                     which pgtenant cannot act as: revoke them as `{grantor}`",
                    grant.grantee,
                    grant.class.keyword().to_lowercase(),
                    grant.schema,
                    grant.name
                ));
                continue;
            };
            grouped
                .entry((
                    grant.class,
                    grant.schema.clone(),
                    grant.grantee.clone(),
                    run_as,
                ))
                .or_insert_with(|| (other, Vec::new()))
                .1
                .push((grant.name.as_str(), grant.arguments.as_str()));
        }
        for ((class, schema, grantee, run_as), (other, names)) in grouped {
            let schema_ident = Ident::new(schema.clone());
            let shown: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
            let chunks: Vec<(String, String)> = match class {
                ObjectClass::Schema => vec![(
                    format!("SCHEMA {}", schema_ident.quote()),
                    format!("schema {schema}"),
                )],
                ObjectClass::Routine => names
                    .chunks(RELATIONS_PER_GRANT)
                    .map(|chunk| {
                        let named: Vec<&str> = chunk.iter().map(|(name, _)| *name).collect();
                        (
                            sql::routine_list(&schema_ident, chunk),
                            format!("routines of schema {schema} ({})", summarize(&named)),
                        )
                    })
                    .collect(),
                ObjectClass::Table | ObjectClass::Sequence => shown
                    .chunks(RELATIONS_PER_GRANT)
                    .map(|chunk| {
                        (
                            sql::relation_list(class.keyword(), &schema_ident, chunk),
                            format!(
                                "{}s of schema {schema} ({})",
                                class.keyword().to_lowercase(),
                                summarize(chunk)
                            ),
                        )
                    })
                    .collect(),
            };
            for (object, what) in chunks {
                self.push_at(
                    Phase::Schemas,
                    run_as.clone().map(Ident::new),
                    Action::Sql {
                        sql: sql::revoke_all_on(&object, &[Some(Ident::new(grantee.clone()))]),
                        transactional: true,
                    },
                    format!(
                        "`{grantee}` is a role of tenant {other} and holds privileges on {what}: tenants are \
                         isolated from each other (and the grant would keep that tenant's roles from being dropped)"
                    ),
                );
            }
        }
    }

    /// The ACL a schema gets when the owner creates it: the owner's rights plus its default
    /// privileges for schemas as they will be after this plan.
    pub(super) fn new_schema_by_owner(
        &self,
        catalog: &DatabaseCatalog,
        owner: &str,
    ) -> ObservedSchema {
        let mut acl = acl_from_pairs([(Some(owner), "USAGE"), (Some(owner), "CREATE")]);
        let defaults = catalog
            .default_acls
            .get(&(owner.to_string(), "n".to_string()));
        if let Some(defaults) = defaults {
            for (grantee, privileges) in &defaults.acl {
                acl.entry(grantee.clone())
                    .or_default()
                    .extend(privileges.iter().cloned());
            }
        }
        ObservedSchema {
            owner: owner.to_string(),
            acl_text: None,
            acl,
        }
    }

    /// Objects created before the grants (or with grants revoked by hand) get them on the next apply.
    pub(super) fn existing_relations(&mut self, catalog: &DatabaseCatalog, schema: &str) {
        let schema_ident = Ident::new(schema.to_string());
        for role in self.tenant.roles.clone() {
            for (is_sequence, wanted, keyword) in [
                (false, &role.access.table, "TABLE"),
                (true, &role.access.sequence, "SEQUENCE"),
            ] {
                if wanted.is_empty() {
                    continue;
                }
                let lacking: Vec<&str> = catalog
                    .relations
                    .iter()
                    .filter(|r| r.schema == schema && r.is_sequence == is_sequence)
                    .filter(|r| r.owner == self.tenant.owner().as_str())
                    .filter(|r| !missing_privileges(wanted, &r.acl, &role.name).is_empty())
                    .map(|r| r.name.as_str())
                    .collect();
                // Named one by one, not `ON ALL TABLES IN SCHEMA`: a relation someone else owns there
                // would make the whole GRANT fail on every run.
                for chunk in lacking.chunks(RELATIONS_PER_GRANT) {
                    self.push_sql(
                        Phase::Schemas,
                        sql::grant_on_relations(wanted, keyword, &schema_ident, chunk, &role.name),
                        format!(
                            "{}s of schema {schema} lack {} for the {} role: {}",
                            keyword.to_lowercase(),
                            join_privileges(wanted),
                            role.kind.as_str(),
                            summarize(chunk)
                        ),
                    );
                }
            }
        }
    }

    pub(super) fn default_privileges(&mut self, catalog: &DatabaseCatalog) {
        let owner = self.tenant.owner().clone();
        for ((role, code), defaults) in &catalog.default_acls {
            if role != owner.as_str() {
                continue;
            }
            let Some(class) = default_object_keyword(code) else {
                continue;
            };
            for grantee in defaults.acl.keys().flatten() {
                if let Some(other) = self.other_tenant_of(grantee) {
                    self.push_sql(
                        Phase::DefaultPrivileges,
                        sql::revoke_default_privileges(&owner, class, &Ident::new(grantee.clone())),
                        format!(
                            "{} the owner creates later would grant `{grantee}`, a role of tenant {other}: \
                             tenants are isolated from each other",
                            class.to_lowercase()
                        ),
                    );
                }
            }
        }
        for object in DefaultObject::ALL {
            let current = catalog
                .default_acls
                .get(&(
                    owner.as_str().to_string(),
                    object.catalog_code().to_string(),
                ))
                .map(|d| d.acl.clone())
                .unwrap_or_default();
            for role in self.tenant.roles.clone().iter().filter(|r| !r.owner) {
                let missing = missing_privileges(object.grants(&role.access), &current, &role.name);
                if missing.is_empty() {
                    continue;
                }
                self.push_sql(
                    Phase::DefaultPrivileges,
                    sql::alter_default_privileges(&owner, &missing, object.sql_keyword(), &role.name),
                    format!(
                        "{} that the owner creates later must grant {} to the {} role automatically",
                        object.sql_keyword().to_lowercase(),
                        join_privileges(&missing),
                        role.kind.as_str()
                    ),
                );
            }
        }
    }

    /// Declared extensions that are missing: trusted ones created by the owner, others only when
    /// the platform allows them, by the control role; what cannot be created blocks this tenant only.
    pub(super) fn extensions(&mut self, catalog: &DatabaseCatalog) {
        for name in &self.tenant.extensions {
            if catalog.extensions.contains(name) {
                continue;
            }
            let statement = sql::create_extension(&Ident::new(name.clone()), &Ident::new("public"));
            match self.observed.available_extensions.get(name) {
                None => self.blocked.push(format!(
                    "extension {name} is not available on this server (pg_available_extensions): install its \
                     package on the database host or remove it from the spec"
                )),
                Some(true) => {
                    let owner = self.tenant.owner().clone();
                    self.push_at(
                        Phase::Extensions,
                        Some(owner),
                        Action::Sql { sql: statement, transactional: true },
                        format!("extension {name} is declared (trusted: the owner may create it)"),
                    );
                }
                Some(false) if self.context.superuser_extensions.contains(name) => self.push_at(
                    Phase::Extensions,
                    None,
                    Action::Sql { sql: statement, transactional: true },
                    format!("extension {name} is declared and on the platform's superuser allowlist"),
                ),
                Some(false) => self.blocked.push(format!(
                    "extension {name} needs superuser to create and is not on the platform's allowlist \
                     (--superuser-extensions): ask the platform team to allow it, or create it in a migration \
                     if your managed service trusts it"
                )),
            }
        }
    }
}
