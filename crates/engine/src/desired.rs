//! What the cluster should look like: names, roles and privileges per tenant, derived from the spec.
//! Pure: no I/O. The privilege model of seed 000 lives here and nowhere else.

use std::collections::{BTreeMap, BTreeSet};

use pgtenant_secrets::SecretPath;
use pgtenant_spec::{
    DatabaseSpec, Environment, LoadedRepo, LogStatements, Mode, Preset, RoleDuty, TenantId,
};
use serde::Serialize;

use crate::ident::Ident;

/// A tenant role's suffix, the presets' vocabulary: defined with the presets in the spec.
pub use pgtenant_spec::RoleKind;

/// What a role is given by grants (what it gets through ownership or membership is not listed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Access {
    pub database: Privileges,
    pub schema: Privileges,
    pub table: Privileges,
    pub sequence: Privileges,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredRole {
    pub kind: RoleKind,
    pub name: Ident,
    /// The second login that grace rotation alternates with (created only by `rotate --grace`).
    pub alternate: Ident,
    /// Where its credentials live; None for a role that does not log in.
    pub secret_path: Option<SecretPath>,
    /// Owns the database and the tenant's schemas.
    pub owner: bool,
    /// Roles of the tenant whose privileges it holds through membership.
    pub member_of: Vec<Ident>,
    /// `ALTER ROLE … SET role`: sessions act as this role from login on (so objects get one owner).
    pub assumes: Option<Ident>,
    pub access: Access,
    pub attributes: RoleAttributes,
    pub statement_timeout_ms: Option<u64>,
    pub log_statements: Option<LogStatements>,
}

impl DesiredRole {
    /// Session defaults pgtenant manages (`ALTER ROLE … SET`), as `pg_db_role_setting` stores them.
    pub fn config(&self) -> BTreeMap<&'static str, String> {
        let mut config = BTreeMap::new();
        if let Some(target) = &self.assumes {
            config.insert("role", target.as_str().to_string());
        }
        if let Some(ms) = self.statement_timeout_ms {
            config.insert("statement_timeout", ms.to_string());
        }
        if let Some(level) = self.log_statements {
            config.insert("log_statement", level.as_str().to_string());
        }
        config
    }

    /// The grace-rotation twin's settings: the role's own, and for an owner, acting as the owner so
    /// what the twin creates is owned by the same role.
    pub fn alternate_config(&self) -> BTreeMap<&'static str, String> {
        let mut config = self.config();
        if self.owner {
            config.insert("role", self.name.as_str().to_string());
        }
        config
    }
}

/// Keys of `pg_db_role_setting` that pgtenant owns; any other setting is left alone.
pub const MANAGED_ROLE_SETTINGS: [&str; 3] = ["role", "statement_timeout", "log_statement"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredTenant {
    /// `<namespace>/<name>`, how users and reports name a tenant.
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub database: Ident,
    pub mode: Mode,
    pub preset: Preset,
    /// The preset's roles; exactly one is the owner.
    pub roles: Vec<DesiredRole>,
    /// Schemas besides `public` that must exist, owned and granted like `public`.
    pub schemas: Vec<Ident>,
    pub extensions: Vec<String>,
    /// The database's `CONNECTION LIMIT` (-1: none).
    pub connection_limit: i32,
    /// Set in the spec; otherwise the platform's tier applies.
    pub environment: Option<Environment>,
    /// `pooling:` of the spec; None: the platform's defaults.
    pub pooling: Option<pgtenant_spec::Pooling>,
    /// The cluster of a fleet the tenant is placed on, recorded in its database marker; None
    /// outside a fleet (a marker without `cluster`, as before).
    pub cluster: Option<String>,
}

impl DesiredTenant {
    pub fn from_spec(spec: &DatabaseSpec) -> Self {
        let tenant = spec.tenant();
        let roles = policy::roles(spec.preset)
            .into_iter()
            .map(|model| {
                let name = |kind: RoleKind| Ident::new(tenant.role(kind));
                let settings = spec
                    .roles
                    .get(model.kind.as_str())
                    .cloned()
                    .unwrap_or_default();
                DesiredRole {
                    kind: model.kind,
                    name: name(model.kind),
                    alternate: Ident::new(tenant.alternate_role(model.kind)),
                    secret_path: model
                        .login
                        .then(|| SecretPath::for_tenant(&tenant, model.kind)),
                    owner: model.owner,
                    member_of: model.member_of.iter().map(|k| name(*k)).collect(),
                    assumes: model.assumes.map(name),
                    access: model.access,
                    attributes: RoleAttributes {
                        login: model.login,
                        connection_limit: settings.connection_limit.unwrap_or(-1),
                        ..RoleAttributes::TENANT
                    },
                    statement_timeout_ms: settings.statement_timeout_ms,
                    log_statements: settings.log_statements,
                }
            })
            .collect();
        let mut schemas: Vec<Ident> = spec
            .preset
            .implied_schemas()
            .iter()
            .map(|s| s.to_string())
            .chain(spec.schemas.iter().cloned())
            .map(Ident::new)
            .collect();
        schemas.sort();
        schemas.dedup();
        DesiredTenant {
            id: tenant.to_string(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            database: Ident::new(tenant.database()),
            mode: spec.mode,
            preset: spec.preset,
            roles,
            schemas,
            extensions: spec.extensions.clone(),
            connection_limit: spec.connection_limit.unwrap_or(-1),
            environment: spec.environment,
            pooling: spec.pooling,
            cluster: None,
        }
    }

    /// A tenant named on the command line (`NS/DB`): the default preset and settings.
    /// `namespace` and `name` must be valid DNS-1123 labels (`pgtenant_spec::is_dns_label`).
    pub fn new(namespace: &str, name: &str, mode: Mode) -> Self {
        Self::from_spec(&DatabaseSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            mode,
            ..DatabaseSpec::default()
        })
    }

    /// The tenant's identity, from which its names derive.
    pub fn tenant_id(&self) -> TenantId {
        TenantId::new(&self.namespace, &self.name)
    }

    pub fn role(&self, kind: RoleKind) -> Option<&DesiredRole> {
        self.roles.iter().find(|r| r.kind == kind)
    }

    /// The role that owns the database and its schemas.
    pub fn owner(&self) -> &Ident {
        &self
            .roles
            .iter()
            .find(|r| r.owner)
            .expect("every preset has an owner")
            .name
    }

    pub fn login_roles(&self) -> impl Iterator<Item = &DesiredRole> {
        self.roles.iter().filter(|r| r.secret_path.is_some())
    }
}

/// The role `kind` of the tenant whose database is `database` ([`pgtenant_spec::role_name`]).
pub fn role_name(database: &str, kind: RoleKind) -> String {
    pgtenant_spec::role_name(database, kind.as_str())
}

/// Grace rotation's second login for `role` ([`pgtenant_spec::alternate_role_name`]).
pub fn alternate_name(role: &str) -> String {
    pgtenant_spec::alternate_role_name(role)
}

/// The desired state of every tenant whose spec file parsed and validated.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub tenants: Vec<DesiredTenant>,
    /// Why no database may be dropped in this run (spec files failed: their tenants are unknown).
    pub drops_held_because: Option<String>,
    /// The spec files that failed, relative to the repo root (`<namespace>/<folder>/values.yaml`):
    /// the tenants of their namespaces are unknown, not removed.
    pub failed_files: Vec<std::path::PathBuf>,
}

impl Desired {
    pub fn from_repo(repo: &LoadedRepo) -> Self {
        let failed = repo.failed_files.len();
        Desired {
            tenants: repo.databases.iter().map(DesiredTenant::from_spec).collect(),
            drops_held_because: (failed > 0).then(|| {
                format!(
                    "{failed} spec file(s) failed to parse or validate: their databases are unknown, \
                     so nothing is dropped until every file is fixed"
                )
            }),
            failed_files: repo.failed_files.clone(),
        }
    }

    /// Why a tenant the cluster has and the repo does not declare may still be declared: a failed
    /// file in its namespace (best: in a folder named after it). None when no such file failed.
    pub fn undeclared_because_of_errors(&self, tenant: &str) -> Option<String> {
        let (namespace, name) = tenant.split_once('/')?;
        let in_namespace: Vec<&std::path::PathBuf> = self
            .failed_files
            .iter()
            .filter(|f| {
                let mut parts = f.components();
                parts.next().is_some_and(|c| c.as_os_str() == namespace) && parts.next().is_some()
            })
            .collect();
        let own = in_namespace
            .iter()
            .find(|f| f.components().nth(1).is_some_and(|c| c.as_os_str() == name));
        let shown = |f: &std::path::PathBuf| f.display().to_string();
        match (own, in_namespace.as_slice()) {
            (Some(file), _) => Some(format!(
                "kept: its values file {} has errors (fix it; nothing is dropped while a file fails)",
                shown(file)
            )),
            (None, []) => None,
            (None, files) => Some(format!(
                "kept: {} in its namespace {} errors and may declare it (fix {}; nothing is dropped while a file fails)",
                files.iter().map(|f| shown(f)).collect::<Vec<_>>().join(", "),
                if files.len() == 1 { "has" } else { "have" },
                if files.len() == 1 { "it" } else { "them" },
            )),
        }
    }
}

/// Privilege names as `aclexplode()` reports them, so observed and desired compare directly.
pub type Privileges = BTreeSet<&'static str>;

fn privileges(names: &[&'static str]) -> Privileges {
    names.iter().copied().collect()
}

/// The role models of the presets (seeds 000, 002 and 004), least privilege, extended to schemas
/// the owner creates later. The only place privileges are decided.
pub mod policy {
    use super::*;

    /// One role of a preset, with its privileges.
    pub struct RoleModel {
        pub kind: RoleKind,
        pub login: bool,
        pub owner: bool,
        pub member_of: Vec<RoleKind>,
        pub assumes: Option<RoleKind>,
        pub access: Access,
    }

    /// Owner rights on the database are the defaults; everyone else may only connect and use temp tables.
    fn connect() -> Privileges {
        privileges(&["CONNECT", "TEMPORARY"])
    }

    fn owner(kind: RoleKind, login: bool) -> RoleModel {
        RoleModel {
            kind,
            login,
            owner: true,
            member_of: Vec::new(),
            assumes: None,
            access: Access {
                database: privileges(&["CREATE", "TEMPORARY", "CONNECT"]),
                ..Access::default()
            },
        }
    }

    fn writer(kind: RoleKind, login: bool) -> RoleModel {
        RoleModel {
            kind,
            login,
            owner: false,
            member_of: Vec::new(),
            assumes: None,
            access: Access {
                database: connect(),
                schema: privileges(&["USAGE"]),
                table: privileges(&["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"]),
                sequence: privileges(&["SELECT", "UPDATE", "USAGE"]),
            },
        }
    }

    fn reader(kind: RoleKind, login: bool) -> RoleModel {
        RoleModel {
            kind,
            login,
            owner: false,
            member_of: Vec::new(),
            assumes: None,
            access: Access {
                database: connect(),
                schema: privileges(&["USAGE"]),
                table: privileges(&["SELECT"]),
                sequence: privileges(&["SELECT"]),
            },
        }
    }

    /// A login that acts as the owner (seed 002): one owner for every object, whoever created it.
    fn acts_as_owner(kind: RoleKind, login: bool, owner: RoleKind) -> RoleModel {
        RoleModel {
            kind,
            login,
            owner: false,
            member_of: vec![owner],
            assumes: Some(owner),
            access: Access {
                database: connect(),
                ..Access::default()
            },
        }
    }

    /// The preset's roles ([`Preset::roles`]), each with the privileges of its duty.
    pub fn roles(preset: Preset) -> Vec<RoleModel> {
        preset
            .roles()
            .iter()
            .map(|role| match role.duty {
                RoleDuty::Owner => owner(role.kind, role.login),
                RoleDuty::Write => writer(role.kind, role.login),
                RoleDuty::Read => reader(role.kind, role.login),
                RoleDuty::ActsAsOwner => acts_as_owner(role.kind, role.login, preset.owner()),
            })
            .collect()
    }

    /// Schemas a preset brings besides `public` ([`Preset::implied_schemas`]).
    pub fn implied_schemas(preset: Preset) -> &'static [&'static str] {
        preset.implied_schemas()
    }

    /// The object classes covered by `ALTER DEFAULT PRIVILEGES FOR ROLE <owner>` (no `IN SCHEMA`, so
    /// schemas the owner creates later, and their tables, are covered with no GRANT run by anyone).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
    #[serde(rename_all = "lowercase")]
    pub enum DefaultObject {
        Tables,
        Sequences,
        Schemas,
    }

    impl DefaultObject {
        pub const ALL: [DefaultObject; 3] = [
            DefaultObject::Tables,
            DefaultObject::Sequences,
            DefaultObject::Schemas,
        ];

        /// `pg_default_acl.defaclobjtype`.
        pub fn catalog_code(self) -> &'static str {
            match self {
                DefaultObject::Tables => "r",
                DefaultObject::Sequences => "S",
                DefaultObject::Schemas => "n",
            }
        }

        pub fn sql_keyword(self) -> &'static str {
            match self {
                DefaultObject::Tables => "TABLES",
                DefaultObject::Sequences => "SEQUENCES",
                DefaultObject::Schemas => "SCHEMAS",
            }
        }

        pub fn grants(self, access: &Access) -> &Privileges {
            match self {
                DefaultObject::Tables => &access.table,
                DefaultObject::Sequences => &access.sequence,
                DefaultObject::Schemas => &access.schema,
            }
        }
    }
}

/// Role attributes every tenant role must have: a login and nothing that reaches past its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoleAttributes {
    pub login: bool,
    pub superuser: bool,
    pub createdb: bool,
    pub createrole: bool,
    pub replication: bool,
    pub bypassrls: bool,
    pub inherit: bool,
    pub connection_limit: i32,
}

impl RoleAttributes {
    pub const TENANT: RoleAttributes = RoleAttributes {
        login: true,
        superuser: false,
        createdb: false,
        createrole: false,
        replication: false,
        bypassrls: false,
        inherit: true,
        connection_limit: -1,
    };

    /// The `CREATE/ALTER ROLE … WITH` options that turn `self` into `target`, all of them when `self` is None.
    pub fn options_towards(
        current: Option<&RoleAttributes>,
        target: &RoleAttributes,
    ) -> Vec<String> {
        let flag = |on: bool, name: &str| {
            if on {
                name.to_string()
            } else {
                format!("NO{name}")
            }
        };
        type Flag = fn(&RoleAttributes) -> bool;
        let pairs: [(Flag, &str); 7] = [
            (|a| a.login, "LOGIN"),
            (|a| a.superuser, "SUPERUSER"),
            (|a| a.createdb, "CREATEDB"),
            (|a| a.createrole, "CREATEROLE"),
            (|a| a.replication, "REPLICATION"),
            (|a| a.bypassrls, "BYPASSRLS"),
            (|a| a.inherit, "INHERIT"),
        ];
        let mut options: Vec<String> = pairs
            .iter()
            .filter(|(get, _)| current.is_none_or(|c| get(c) != get(target)))
            .map(|(get, name)| flag(get(target), name))
            .collect();
        if current.is_none_or(|c| c.connection_limit != target.connection_limit) {
            options.push(format!("CONNECTION LIMIT {}", target.connection_limit));
        }
        options
    }
}

/// What pgtenant writes into `COMMENT ON DATABASE/ROLE` so that a later run, on any machine, can tell
/// its own objects (and a protected database's mode) from everything else on a shared cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Marker {
    pub managed_by: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleKind>,
    /// Set on grace rotation's second login of a role.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alternate: bool,
    /// When a protected database was first seen no longer declared (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphaned_since: Option<String>,
    /// The environment tier the spec gave the database, for what outlives its declaration (the
    /// retention of its final backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// The fleet's cluster the database was placed on (database markers only); absent in
    /// markers written outside a fleet, which stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Set on the copy a `pgtenant move` left behind (a protected orphan): the cluster the tenant
    /// now lives on. A fleet's inventory does not count such a copy as holding the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<String>,
    /// Until when (RFC 3339, UTC) the moved copy is kept and `pgtenant move --abort` may roll back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_until: Option<String>,
}

pub const MANAGED_BY: &str = "pgtenant";

impl Marker {
    pub fn database(tenant: &DesiredTenant) -> Self {
        Marker {
            managed_by: MANAGED_BY.into(),
            tenant: tenant.id.clone(),
            mode: Some(tenant.mode),
            role: None,
            alternate: false,
            orphaned_since: None,
            environment: tenant.environment,
            cluster: tenant.cluster.clone(),
            moved_to: None,
            moved_until: None,
        }
    }

    pub fn role(tenant: &DesiredTenant, kind: RoleKind) -> Self {
        Marker {
            managed_by: MANAGED_BY.into(),
            tenant: tenant.id.clone(),
            mode: None,
            role: Some(kind),
            alternate: false,
            orphaned_since: None,
            environment: None,
            cluster: None,
            moved_to: None,
            moved_until: None,
        }
    }

    pub fn alternate(tenant: &DesiredTenant, kind: RoleKind) -> Self {
        Marker {
            alternate: true,
            ..Marker::role(tenant, kind)
        }
    }

    /// How every marker comment begins (`managed_by` is serialized first): to find pgtenant's
    /// roles in the catalog without parsing every comment.
    pub fn comment_prefix() -> String {
        format!(
            "{{\"managed_by\":{}",
            serde_json::to_string(MANAGED_BY).expect("a string serializes")
        )
    }

    /// A comment that is not our JSON is simply not a marker: someone else's comment.
    pub fn parse(comment: &str) -> Option<Self> {
        serde_json::from_str::<Marker>(comment)
            .ok()
            .filter(|m| m.managed_by == MANAGED_BY)
    }

    pub fn to_comment(&self) -> String {
        serde_json::to_string(self).expect("marker serializes")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use pgtenant_spec::SourceLocation;

    use super::*;

    fn tenant(mode: Mode) -> DesiredTenant {
        DesiredTenant::from_spec(&DatabaseSpec {
            namespace: "idp-dev".into(),
            name: "my-db".into(),
            mode,
            location: SourceLocation {
                file: PathBuf::from("idp-dev/my-db/values.yaml"),
                line: 2,
                column: 11,
            },
            ..DatabaseSpec::default()
        })
    }

    #[test]
    fn names_follow_the_platform_convention() {
        let t = tenant(Mode::Standard);
        assert_eq!(t.id, "idp-dev/my-db");
        assert_eq!(t.database.as_str(), "idp-dev-my-db");
        let names: Vec<&str> = t.roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "idp-dev-my-db-admin",
                "idp-dev-my-db-write",
                "idp-dev-my-db-read"
            ]
        );
        assert_eq!(
            t.role(RoleKind::Read)
                .unwrap()
                .secret_path
                .as_ref()
                .unwrap()
                .as_str(),
            "customer/idp-dev/my-db-read"
        );
        assert_eq!(t.owner().as_str(), "idp-dev-my-db-admin");
    }

    #[test]
    fn presets_name_their_roles_and_owner() {
        let spec = |preset| DatabaseSpec {
            namespace: "shop".into(),
            name: "cart".into(),
            preset,
            schemas: vec!["app".into(), "audit".into()],
            ..DatabaseSpec::default()
        };
        let migrator = DesiredTenant::from_spec(&spec(Preset::AppMigrator));
        let names: Vec<&str> = migrator.roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["shop-cart-migrator", "shop-cart-app"]);
        assert_eq!(migrator.owner().as_str(), "shop-cart-migrator");
        assert_eq!(
            migrator.schemas,
            [Ident::new("app"), Ident::new("audit")],
            "app implied once"
        );

        let owned = DesiredTenant::from_spec(&spec(Preset::SchemaOwner));
        let owner = owned.role(RoleKind::Owner).unwrap();
        assert!(!owner.attributes.login && owner.secret_path.is_none());
        let app = owned.role(RoleKind::App).unwrap();
        assert_eq!(app.member_of, [Ident::new("shop-cart-owner")]);
        assert_eq!(app.config()["role"], "shop-cart-owner");
        assert_eq!(owned.login_roles().count(), 3);
    }

    #[test]
    fn roles_come_from_the_preset_definition() {
        for preset in Preset::ALL {
            let t = DesiredTenant::from_spec(&DatabaseSpec {
                namespace: "shop".into(),
                name: "cart".into(),
                preset,
                ..DatabaseSpec::default()
            });
            let id = t.tenant_id();
            assert_eq!(t.id, id.to_string());
            assert_eq!(t.database.as_str(), id.database());
            let kinds: Vec<RoleKind> = t.roles.iter().map(|r| r.kind).collect();
            let defined: Vec<RoleKind> = preset.roles().iter().map(|r| r.kind).collect();
            assert_eq!(kinds, defined, "{preset:?}");
            let names: Vec<String> = t.roles.iter().map(|r| r.name.to_string()).collect();
            assert_eq!(names, id.roles(preset), "{preset:?}");
            assert_eq!(t.owner().as_str(), id.owner_role(preset), "{preset:?}");
            let logins: Vec<&str> = t.login_roles().map(|r| r.kind.as_str()).collect();
            assert_eq!(logins, preset.login_roles(), "{preset:?}");
            for role in &t.roles {
                assert_eq!(role.alternate.as_str(), id.alternate_role(role.kind));
                assert_eq!(
                    role.alternate.as_str(),
                    alternate_name(&role_name(t.database.as_str(), role.kind))
                );
                if let Some(path) = &role.secret_path {
                    assert_eq!(path.as_str(), id.secret_path(role.kind));
                }
            }
        }
    }

    #[test]
    fn role_settings_become_session_defaults() {
        let mut roles = BTreeMap::new();
        roles.insert(
            "read".to_string(),
            pgtenant_spec::RoleSettings {
                connection_limit: Some(5),
                statement_timeout_ms: Some(30_000),
                log_statements: Some(LogStatements::All),
            },
        );
        let t = DesiredTenant::from_spec(&DatabaseSpec {
            namespace: "idp-dev".into(),
            name: "my-db".into(),
            roles,
            ..DatabaseSpec::default()
        });
        let read = t.role(RoleKind::Read).unwrap();
        assert_eq!(read.attributes.connection_limit, 5);
        let config = read.config();
        let config: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            config,
            [("log_statement", "all"), ("statement_timeout", "30000")]
        );
        let admin = t.role(RoleKind::Admin).unwrap();
        assert_eq!(admin.alternate_config()["role"], "idp-dev-my-db-admin");
    }

    #[test]
    fn markers_round_trip_and_ignore_foreign_comments() {
        let t = tenant(Mode::Protected);
        let marker = Marker::database(&t);
        assert_eq!(Marker::parse(&marker.to_comment()), Some(marker.clone()));
        assert!(!marker.to_comment().contains("cluster"));
        let placed = Marker::database(&DesiredTenant {
            cluster: Some("eu-1".into()),
            ..t.clone()
        });
        assert!(placed.to_comment().contains(r#""cluster":"eu-1""#));
        assert_eq!(Marker::parse(&placed.to_comment()), Some(placed));
        let role = Marker::role(&t, RoleKind::Write);
        assert_eq!(Marker::parse(&role.to_comment()), Some(role.clone()));
        assert!(role.to_comment().starts_with(&Marker::comment_prefix()));
        assert_eq!(Marker::parse("BI team's scratch database"), None);
        assert_eq!(
            Marker::parse(r#"{"managed_by":"someone-else","tenant":"x/y"}"#),
            None
        );
    }

    #[test]
    fn attribute_changes_name_only_what_differs() {
        let all = RoleAttributes::options_towards(None, &RoleAttributes::TENANT);
        assert_eq!(
            all.join(" "),
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT -1"
        );
        let mut drifted = RoleAttributes::TENANT;
        drifted.createdb = true;
        drifted.connection_limit = 5;
        assert_eq!(
            RoleAttributes::options_towards(Some(&drifted), &RoleAttributes::TENANT),
            ["NOCREATEDB", "CONNECTION LIMIT -1"]
        );
        assert!(RoleAttributes::options_towards(
            Some(&RoleAttributes::TENANT),
            &RoleAttributes::TENANT
        )
        .is_empty());
    }

    #[test]
    fn failed_files_hold_every_drop() {
        let repo = LoadedRepo {
            failed_files: vec![PathBuf::from("a/b/values.yaml")],
            ..LoadedRepo::default()
        };
        let desired = Desired::from_repo(&repo);
        assert!(desired.drops_held_because.is_some());
        assert_eq!(
            desired.undeclared_because_of_errors("a/b").as_deref(),
            Some("kept: its values file a/b/values.yaml has errors (fix it; nothing is dropped while a file fails)")
        );
        assert!(desired
            .undeclared_because_of_errors("a/other")
            .unwrap()
            .contains("a/b/values.yaml in its namespace has errors"));
        assert_eq!(desired.undeclared_because_of_errors("z/b"), None);
        assert!(Desired::from_repo(&LoadedRepo::default())
            .drops_held_because
            .is_none());
    }
}
