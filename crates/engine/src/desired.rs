//! What the cluster should look like: names, roles and privileges per tenant, derived from the spec.
//! Pure: no I/O. The privilege model of seed 000 lives here and nowhere else.

use std::collections::BTreeSet;

use pgtenant_secrets::SecretPath;
use pgtenant_spec::{DatabaseSpec, LoadedRepo, Mode};
use serde::Serialize;

use crate::ident::Ident;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    Admin,
    Write,
    Read,
}

impl RoleKind {
    pub const ALL: [RoleKind; 3] = [RoleKind::Admin, RoleKind::Write, RoleKind::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Admin => "admin",
            RoleKind::Write => "write",
            RoleKind::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<RoleKind> {
        RoleKind::ALL.into_iter().find(|kind| kind.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredRole {
    pub kind: RoleKind,
    pub name: Ident,
    /// The second login that grace rotation alternates with (created only by `rotate --grace`).
    pub alternate: Ident,
    pub secret_path: SecretPath,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredTenant {
    /// `<namespace>/<name>`, how users and reports name a tenant.
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub database: Ident,
    pub mode: Mode,
    pub roles: [DesiredRole; 3],
    /// The database's `CONNECTION LIMIT` (-1: none).
    pub connection_limit: i32,
}

impl DesiredTenant {
    pub fn from_spec(spec: &DatabaseSpec) -> Self {
        DesiredTenant {
            connection_limit: spec.connection_limit.unwrap_or(-1),
            ..Self::new(&spec.namespace, &spec.name, spec.mode)
        }
    }

    /// `namespace` and `name` must be valid DNS-1123 labels (the spec validates them; commands that
    /// take `NS/DB` check with `pgtenant_spec::is_dns_label`).
    pub fn new(namespace: &str, name: &str, mode: Mode) -> Self {
        let database = format!("{namespace}-{name}");
        let role = |kind: RoleKind| DesiredRole {
            kind,
            name: Ident::new(role_name(&database, kind)),
            alternate: Ident::new(alternate_name(&role_name(&database, kind))),
            secret_path: SecretPath::for_role(namespace, name, kind.as_str()),
        };
        DesiredTenant {
            roles: RoleKind::ALL.map(role),
            id: format!("{namespace}/{name}"),
            namespace: namespace.to_string(),
            name: name.to_string(),
            database: Ident::new(database),
            mode,
            connection_limit: -1,
        }
    }

    pub fn role(&self, kind: RoleKind) -> &DesiredRole {
        &self.roles[kind as usize]
    }

    pub fn admin(&self) -> &Ident {
        &self.role(RoleKind::Admin).name
    }
}

pub fn role_name(database: &str, kind: RoleKind) -> String {
    format!("{database}-{}", kind.as_str())
}

/// Grace rotation's second login for `role`.
pub fn alternate_name(role: &str) -> String {
    format!("{role}-alt")
}

/// The desired state of every tenant whose spec file parsed and validated.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub tenants: Vec<DesiredTenant>,
    /// Why no database may be dropped in this run (spec files failed: their tenants are unknown).
    pub drops_held_because: Option<String>,
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
        }
    }
}

/// Privilege names as `aclexplode()` reports them, so observed and desired compare directly.
pub type Privileges = BTreeSet<&'static str>;

fn privileges(names: &[&'static str]) -> Privileges {
    names.iter().copied().collect()
}

/// The least-privilege role model of seed 000, extended to schemas admin creates later.
pub mod policy {
    use super::*;

    /// Owner rights on the database are the defaults; read and write may only connect and use temp tables.
    pub fn database(kind: RoleKind) -> Privileges {
        match kind {
            RoleKind::Admin => privileges(&["CREATE", "TEMPORARY", "CONNECT"]),
            RoleKind::Write | RoleKind::Read => privileges(&["CONNECT", "TEMPORARY"]),
        }
    }

    /// Read and write may look up objects in every schema admin owns; only admin may create.
    pub fn schema(kind: RoleKind) -> Privileges {
        match kind {
            RoleKind::Admin => privileges(&["USAGE", "CREATE"]),
            RoleKind::Write | RoleKind::Read => privileges(&["USAGE"]),
        }
    }

    /// Tables, views, materialized views, foreign and partitioned tables.
    pub fn table(kind: RoleKind) -> Privileges {
        match kind {
            RoleKind::Admin => Privileges::new(),
            RoleKind::Write => privileges(&["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"]),
            RoleKind::Read => privileges(&["SELECT"]),
        }
    }

    pub fn sequence(kind: RoleKind) -> Privileges {
        match kind {
            RoleKind::Admin => Privileges::new(),
            RoleKind::Write => privileges(&["SELECT", "UPDATE", "USAGE"]),
            RoleKind::Read => privileges(&["SELECT"]),
        }
    }

    /// The object classes covered by `ALTER DEFAULT PRIVILEGES FOR ROLE admin` (no `IN SCHEMA`, so
    /// schemas admin creates later, and their tables, are covered with no GRANT run by anyone).
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

        pub fn from_catalog_code(code: &str) -> Option<Self> {
            Self::ALL.into_iter().find(|o| o.catalog_code() == code)
        }

        pub fn sql_keyword(self) -> &'static str {
            match self {
                DefaultObject::Tables => "TABLES",
                DefaultObject::Sequences => "SEQUENCES",
                DefaultObject::Schemas => "SCHEMAS",
            }
        }

        pub fn grants(self, kind: RoleKind) -> Privileges {
            match self {
                DefaultObject::Tables => table(kind),
                DefaultObject::Sequences => sequence(kind),
                DefaultObject::Schemas => match kind {
                    RoleKind::Admin => Privileges::new(),
                    RoleKind::Write | RoleKind::Read => schema(kind),
                },
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
        }
    }

    pub fn role(tenant: &DesiredTenant, kind: RoleKind) -> Self {
        Marker {
            managed_by: MANAGED_BY.into(),
            tenant: tenant.id.clone(),
            mode: None,
            role: Some(kind),
            alternate: false,
        }
    }

    pub fn alternate(tenant: &DesiredTenant, kind: RoleKind) -> Self {
        Marker {
            alternate: true,
            ..Marker::role(tenant, kind)
        }
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

impl<'de> serde::Deserialize<'de> for RoleKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RoleKind::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown role `{s}`")))
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
            t.role(RoleKind::Read).secret_path.as_str(),
            "customer/idp-dev/my-db-read"
        );
        for kind in RoleKind::ALL {
            assert_eq!(t.role(kind).kind, kind);
        }
    }

    #[test]
    fn markers_round_trip_and_ignore_foreign_comments() {
        let t = tenant(Mode::Protected);
        let marker = Marker::database(&t);
        assert_eq!(Marker::parse(&marker.to_comment()), Some(marker));
        let role = Marker::role(&t, RoleKind::Write);
        assert_eq!(Marker::parse(&role.to_comment()), Some(role));
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
        assert!(Desired::from_repo(&repo).drops_held_because.is_some());
        assert!(Desired::from_repo(&LoadedRepo::default())
            .drops_held_because
            .is_none());
    }
}
