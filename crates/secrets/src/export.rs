//! A [`Credential`] in the formats applications and tools consume: a libpq
//! URI, a JDBC URL, `KEY=value` lines, a `~/.pgpass` line, JSON, a Kubernetes
//! `Secret` and the `ExternalSecret` that reads the same values from the
//! platform's secret manager.
//!
//! Everything here is pure text rendering; what to connect with and how to
//! secure it comes from [`ConnectionOptions`], who the credential belongs to
//! from [`TenantRole`].
//!
//! Escaping follows each consumer's rules: URIs are percent-encoded (libpq and
//! PgJDBC decode every component), `KEY=value` values are single-quoted for
//! POSIX shells and dotenv loaders, `.pgpass` fields escape `\` and `:` as
//! libpq requires, and YAML strings are double-quoted with JSON escapes (a
//! subset of YAML's), so that a value such as `5432` or `yes` stays a string.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use pgtenant_pg::ClientEnv;
use serde_json::{json, Value};

use crate::{Credential, SecretPath};

/// libpq's `sslmode`, as written into connection strings: the Postgres layer's one definition.
pub use pgtenant_pg::SslMode;

/// How clients secure the connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionOptions {
    pub sslmode: SslMode,
    /// The CA bundle that verifies the server (`sslrootcert`). Written into
    /// connection strings as given, so it should be absolute, and it must
    /// exist where the client runs.
    pub sslrootcert: Option<PathBuf>,
    /// Every member of a highly available cluster (HOST, PORT), in order; empty: not an HA
    /// cluster. With members, the URI and JDBC forms name them all and ask for the primary
    /// (`target_session_attrs=read-write`, `targetServerType=primary`), so applications follow a
    /// failover; `endpoint` and `port` keep the one address they held.
    pub hosts: Vec<(String, u16)>,
}

/// Whose credential it is, in the repo's terms: names the Kubernetes objects
/// and the secret path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantRole<'a> {
    pub namespace: &'a str,
    /// The declared name, without the namespace prefix.
    pub database: &'a str,
    /// A login role of the tenant's preset (`admin`, `write`, `app`, …).
    pub role: &'a str,
}

impl TenantRole<'_> {
    /// `<namespace>-<database>-<role>`: the platform's Kubernetes Secret name
    /// (and the role's login name).
    pub fn object_name(&self) -> String {
        pgtenant_spec::TenantId::new(self.namespace, self.database).secret_name(self.role)
    }

    /// `customer/<namespace>/<database>-<role>`.
    ///
    /// # Panics
    ///
    /// As [`SecretPath::for_role`], on names outside `[a-z0-9-]`.
    pub fn secret_path(&self) -> SecretPath {
        SecretPath::for_role(self.namespace, self.database, self.role)
    }
}

/// The output formats of [`Export::render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Uri,
    Jdbc,
    Env,
    K8sSecret,
    ExternalSecret,
    Pgpass,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 7] = [
        ExportFormat::Json,
        ExportFormat::Uri,
        ExportFormat::Jdbc,
        ExportFormat::Env,
        ExportFormat::K8sSecret,
        ExportFormat::ExternalSecret,
        ExportFormat::Pgpass,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Json => "json",
            ExportFormat::Uri => "uri",
            ExportFormat::Jdbc => "jdbc",
            ExportFormat::Env => "env",
            ExportFormat::K8sSecret => "k8s-secret",
            ExportFormat::ExternalSecret => "external-secret",
            ExportFormat::Pgpass => "pgpass",
        }
    }

    /// File name suffix, distinct per format so that exports of several
    /// formats can share a directory.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Json => "json",
            ExportFormat::Uri => "uri",
            ExportFormat::Jdbc => "jdbc",
            ExportFormat::Env => "env",
            ExportFormat::K8sSecret => "secret.yaml",
            ExportFormat::ExternalSecret => "external-secret.yaml",
            ExportFormat::Pgpass => "pgpass",
        }
    }

    /// Whether the rendering carries the password. The `ExternalSecret` only
    /// points at where the password is kept.
    pub fn contains_password(self) -> bool {
        self != ExportFormat::ExternalSecret
    }
}

/// The `ClusterSecretStore` the platform's `ExternalSecret`s read from.
pub const CLUSTER_SECRET_STORE: &str = "aws-secrets";
/// How often the External Secrets Operator refreshes the Kubernetes Secret.
pub const EXTERNAL_SECRET_REFRESH: &str = "1h";
/// The properties the platform's secrets hold, in the seed's order.
pub const EXTERNAL_SECRET_PROPERTIES: [&str; 4] = ["username", "password", "endpoint", "port"];
/// The properties a pooled credential's secret holds besides, read into the Kubernetes Secret too.
pub const EXTERNAL_SECRET_POOLER_PROPERTIES: [&str; 2] = ["pooler_endpoint", "pooler_port"];

/// A credential ready to be rendered.
#[derive(Debug, Clone, Copy)]
pub struct Export<'a> {
    pub tenant: TenantRole<'a>,
    pub credential: &'a Credential,
    pub options: &'a ConnectionOptions,
}

impl Export<'_> {
    /// The text of `format`, ending with a newline.
    pub fn render(&self, format: ExportFormat) -> String {
        match format {
            ExportFormat::Json => {
                let mut text = serde_json::to_string_pretty(&self.json())
                    .expect("a JSON value always serialises");
                text.push('\n');
                text
            }
            ExportFormat::Uri => format!("{}\n", self.uri()),
            ExportFormat::Jdbc => format!("{}\n", self.jdbc()),
            ExportFormat::Env => self.env(),
            ExportFormat::K8sSecret => self.k8s_secret(),
            ExportFormat::ExternalSecret => self.external_secret(),
            ExportFormat::Pgpass => format!("{}\n", self.pgpass()),
        }
    }

    fn query(&self) -> String {
        let mut query = format!("sslmode={}", self.options.sslmode.as_str());
        if let Some(ca) = &self.options.sslrootcert {
            let _ = write!(
                query,
                "&sslrootcert={}",
                percent_encode(ca.as_os_str().as_bytes(), b"/")
            );
        }
        query
    }

    fn host_port(host: &str, port: u16) -> String {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{}:{port}", percent_encode(host, b""))
        }
    }

    /// `postgresql://user:password@host:port/dbname?sslmode=…[&sslrootcert=…]`,
    /// what libpq (`psql "$URI"`) and most drivers accept.
    pub fn uri(&self) -> String {
        match self.members() {
            Some(hosts) => format!(
                "{}&target_session_attrs=read-write",
                self.uri_at_hosts(&hosts)
            ),
            None => self.uri_at(&self.credential.endpoint, self.credential.port),
        }
    }

    /// The members of an HA cluster as `h1:p1,h2:p2`; None for one server.
    fn members(&self) -> Option<String> {
        (!self.options.hosts.is_empty()).then(|| {
            self.options
                .hosts
                .iter()
                .map(|(host, port)| Self::host_port(host, *port))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// `jdbc:postgresql://host:port/dbname?user=…&password=…&sslmode=…`, for
    /// PgJDBC (whose default `LibPQFactory` reads `sslrootcert`).
    pub fn jdbc(&self) -> String {
        match self.members() {
            Some(hosts) => format!("{}&targetServerType=primary", self.jdbc_at_hosts(&hosts)),
            None => self.jdbc_at(&self.credential.endpoint, self.credential.port),
        }
    }

    /// [`Self::uri`] through the pooler; None when the credential is not pooled. The pooler's
    /// database is the tenant's database name, so only the host and port differ.
    pub fn pooler_uri(&self) -> Option<String> {
        let pooler = self.credential.pooler.as_ref()?;
        Some(self.uri_at(&pooler.endpoint, pooler.port))
    }

    /// [`Self::jdbc`] through the pooler; None when the credential is not pooled.
    pub fn pooler_jdbc(&self) -> Option<String> {
        let pooler = self.credential.pooler.as_ref()?;
        Some(self.jdbc_at(&pooler.endpoint, pooler.port))
    }

    fn uri_at(&self, host: &str, port: u16) -> String {
        self.uri_at_hosts(&Self::host_port(host, port))
    }

    fn uri_at_hosts(&self, hosts: &str) -> String {
        let c = self.credential;
        format!(
            "postgresql://{}:{}@{}/{}?{}",
            percent_encode(&c.username, b""),
            percent_encode(&c.password, b""),
            hosts,
            percent_encode(&c.dbname, b""),
            self.query()
        )
    }

    fn jdbc_at(&self, host: &str, port: u16) -> String {
        self.jdbc_at_hosts(&Self::host_port(host, port))
    }

    fn jdbc_at_hosts(&self, hosts: &str) -> String {
        let c = self.credential;
        format!(
            "jdbc:postgresql://{}/{}?user={}&password={}&{}",
            hosts,
            percent_encode(&c.dbname, b""),
            percent_encode(&c.username, b""),
            percent_encode(&c.password, b""),
            self.query()
        )
    }

    /// This export with the pooler's host and port in place of the server's: what `psql
    /// --pooled` connects with. None when the credential is not pooled.
    pub fn pooled(&self) -> Option<Credential> {
        let pooler = self.credential.pooler.as_ref()?;
        Some(Credential {
            endpoint: pooler.endpoint.clone(),
            port: pooler.port,
            pooler: None,
            ..self.credential.clone()
        })
    }

    /// The variables of the platform's application values (`DB_NAME`,
    /// `DB_USER`, `DB_PASSWORD`, `DB_HOST`, `DB_PORT`), then `DB_SSLMODE`,
    /// `DB_SSLROOTCERT` when a CA is given, and `DATABASE_URL`; for a pooled
    /// credential `DB_POOLER_HOST`, `DB_POOLER_PORT` and `DATABASE_POOLER_URL` last.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        let c = self.credential;
        let mut vars = vec![
            ("DB_NAME", c.dbname.clone()),
            ("DB_USER", c.username.clone()),
            ("DB_PASSWORD", c.password.clone()),
            ("DB_HOST", c.endpoint.clone()),
            ("DB_PORT", c.port.to_string()),
            ("DB_SSLMODE", self.options.sslmode.as_str().to_string()),
        ];
        if let Some(ca) = &self.options.sslrootcert {
            vars.push(("DB_SSLROOTCERT", ca.to_string_lossy().into_owned()));
        }
        vars.push(("DATABASE_URL", self.uri()));
        if let (Some(pooler), Some(uri)) = (&c.pooler, self.pooler_uri()) {
            vars.push(("DB_POOLER_HOST", pooler.endpoint.clone()));
            vars.push(("DB_POOLER_PORT", pooler.port.to_string()));
            vars.push(("DATABASE_POOLER_URL", uri));
        }
        vars
    }

    /// [`Self::env_vars`] as `NAME='value'` lines: `set -a; . ./file` in a
    /// POSIX shell, and dotenv loaders, read them back verbatim.
    pub fn env(&self) -> String {
        self.env_vars()
            .into_iter()
            .map(|(name, value)| format!("{name}={}\n", shell_quote(&value)))
            .collect()
    }

    /// The variables libpq reads (psql, pg_dump, any libpq program): the
    /// password travels in the environment, never on a command line.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        self.client_env().vars()
    }

    /// [`Self::libpq_env`] as the Postgres layer's builder, to set on a command.
    pub fn client_env(&self) -> ClientEnv {
        let c = self.credential;
        let mut env =
            ClientEnv::new(&c.endpoint, c.port, &c.dbname).login(&c.username, &c.password);
        env.ssl_mode = self.options.sslmode;
        env.root_cert = self.options.sslrootcert.clone();
        env
    }

    /// `hostname:port:database:username:password` for `~/.pgpass` (or
    /// `PGPASSFILE`), with `\` and `:` escaped by a backslash as libpq
    /// requires.
    pub fn pgpass(&self) -> String {
        let c = self.credential;
        [
            c.endpoint.as_str(),
            &c.port.to_string(),
            &c.dbname,
            &c.username,
            &c.password,
        ]
        .map(pgpass_escape)
        .join(":")
    }

    /// The keys of `pgtenant credentials --format json` (`username`,
    /// `password`, `endpoint`, `port`, `dbname`, `sslmode`, `uri`), plus
    /// `sslrootcert` (null without a CA) and `jdbc`; for a pooled credential
    /// `pooler_endpoint`, `pooler_port`, `pooler_uri` and `pooler_jdbc` too.
    pub fn json(&self) -> Value {
        let c = self.credential;
        let mut json = json!({
            "username": c.username,
            "password": c.password,
            "endpoint": c.endpoint,
            "port": c.port,
            "dbname": c.dbname,
            "sslmode": self.options.sslmode.as_str(),
            "sslrootcert": self.options.sslrootcert.as_ref().map(|ca| ca.to_string_lossy()),
            "uri": self.uri(),
            "jdbc": self.jdbc(),
        });
        self.add_pooler_keys(&mut json);
        json
    }

    /// Adds `pooler_endpoint`, `pooler_port`, `pooler_uri` and `pooler_jdbc` to a JSON object
    /// when the credential is pooled (the `credentials --format json` and the stored AWS value).
    pub fn add_pooler_keys(&self, json: &mut Value) {
        let (Some(pooler), Some(uri), Some(jdbc), Some(object)) = (
            &self.credential.pooler,
            self.pooler_uri(),
            self.pooler_jdbc(),
            json.as_object_mut(),
        ) else {
            return;
        };
        object.insert("pooler_endpoint".into(), json!(pooler.endpoint));
        object.insert("pooler_port".into(), json!(pooler.port));
        object.insert("pooler_uri".into(), json!(uri));
        object.insert("pooler_jdbc".into(), json!(jdbc));
    }

    /// A Kubernetes `Secret` named like the platform's (`<ns>-<db>-<role>`)
    /// in the tenant's namespace, with keys `username`, `password`,
    /// `endpoint`, `port`, `dbname`, `uri` and `jdbc-uri` as `stringData`; for a
    /// pooled credential also Crunchy PGO's `pgbouncer-host`, `pgbouncer-port`,
    /// `pgbouncer-uri` and `pgbouncer-jdbc-uri`.
    pub fn k8s_secret(&self) -> String {
        let c = self.credential;
        let mut keys = vec![
            ("username", c.username.clone()),
            ("password", c.password.clone()),
            ("endpoint", c.endpoint.clone()),
            ("port", c.port.to_string()),
            ("dbname", c.dbname.clone()),
            ("uri", self.uri()),
            ("jdbc-uri", self.jdbc()),
        ];
        if let (Some(pooler), Some(uri), Some(jdbc)) =
            (&c.pooler, self.pooler_uri(), self.pooler_jdbc())
        {
            keys.extend([
                ("pgbouncer-host", pooler.endpoint.clone()),
                ("pgbouncer-port", pooler.port.to_string()),
                ("pgbouncer-uri", uri),
                ("pgbouncer-jdbc-uri", jdbc),
            ]);
        }
        let (secret, order) =
            crate::manifest::secret(&self.tenant.object_name(), self.tenant.namespace, &keys);
        crate::manifest::to_yaml(&secret, ("stringData", &order))
    }

    /// The `ExternalSecret` of the platform's restore procedure: the External
    /// Secrets Operator fills Secret `<ns>-<db>-<role>` from
    /// `customer/<ns>/<db>-<role>` in the `aws-secrets` `ClusterSecretStore`.
    /// It holds no password.
    pub fn external_secret(&self) -> String {
        self.external_secret_at(self.tenant.secret_path().as_str())
    }

    /// [`Self::external_secret`] reading the provider's secret `key` (the
    /// store's name for it, under a prefix other than `customer/`).
    pub fn external_secret_at(&self, key: &str) -> String {
        use crate::manifest::{
            ExternalSecret, ExternalSecretData, ExternalSecretSpec, ExternalSecretTarget,
            RemoteRef, SecretStoreRef,
        };
        let name = self.tenant.object_name();
        let manifest = ExternalSecret {
            api_version: ExternalSecret::API_VERSION,
            kind: ExternalSecret::KIND,
            metadata: crate::manifest::metadata(&name, self.tenant.namespace),
            spec: ExternalSecretSpec {
                refresh_interval: EXTERNAL_SECRET_REFRESH.to_owned(),
                secret_store_ref: SecretStoreRef {
                    name: CLUSTER_SECRET_STORE.to_owned(),
                    kind: "ClusterSecretStore".to_owned(),
                },
                target: ExternalSecretTarget { name },
                data: EXTERNAL_SECRET_PROPERTIES
                    .iter()
                    .chain(
                        self.credential
                            .pooler
                            .as_ref()
                            .map_or(&[][..], |_| &EXTERNAL_SECRET_POOLER_PROPERTIES[..]),
                    )
                    .map(|property| ExternalSecretData {
                        secret_key: (*property).to_owned(),
                        remote_ref: RemoteRef {
                            key: key.to_owned(),
                            property: (*property).to_owned(),
                        },
                    })
                    .collect(),
            },
        };
        crate::manifest::to_yaml(&manifest, ("", &[]))
    }
}

/// URI components percent-encoded: [`pgtenant_pg::conninfo::percent_encode`].
pub use pgtenant_pg::conninfo::percent_encode;

/// Single quotes make any value literal in POSIX shells and dotenv files.
pub use pgtenant_pg::quote::shell_quote;

/// libpq's `.pgpass` escaping: a backslash before `\` and `:`.
pub fn pgpass_escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for ch in field.chars() {
        if ch == '\\' || ch == ':' {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use saphyr::{LoadableYamlNode, Yaml};

    use super::*;

    fn credential(password: &str) -> Credential {
        Credential {
            username: "idp-dev-my-db-write".into(),
            password: password.into(),
            endpoint: "db.internal".into(),
            port: 5432,
            dbname: "idp-dev-my-db".into(),
            pooler: None,
            scram_iterations: None,
        }
    }

    const TENANT: TenantRole<'static> = TenantRole {
        namespace: "idp-dev",
        database: "my-db",
        role: "write",
    };

    fn export<'a>(credential: &'a Credential, options: &'a ConnectionOptions) -> Export<'a> {
        Export {
            tenant: TENANT,
            credential,
            options,
        }
    }

    fn verify_full() -> ConnectionOptions {
        ConnectionOptions {
            sslmode: SslMode::VerifyFull,
            sslrootcert: Some(PathBuf::from("/var/lib/pgtenant/cluster/ca.crt")),
            hosts: Vec::new(),
        }
    }

    fn load_yaml(text: &str) -> Yaml<'_> {
        let mut docs = Yaml::load_from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(docs.len(), 1, "{text}");
        docs.remove(0)
    }

    fn yaml_string<'a>(node: &'a Yaml<'a>, path: &[&str]) -> &'a str {
        let mut node = node;
        for key in path {
            node = node
                .as_mapping_get(key)
                .unwrap_or_else(|| panic!("no {key} in {path:?}"));
        }
        node.as_str()
            .unwrap_or_else(|| panic!("{path:?} is not a string: {node:?}"))
    }

    #[test]
    fn uri_with_require_by_default() {
        let c = credential("Abc123");
        let options = ConnectionOptions::default();
        assert_eq!(
            export(&c, &options).uri(),
            "postgresql://idp-dev-my-db-write:Abc123@db.internal:5432/idp-dev-my-db?sslmode=require"
        );
    }

    #[test]
    fn an_ha_clusters_uri_and_jdbc_name_every_member_and_ask_for_the_primary() {
        let c = credential("Abc123");
        let options = ConnectionOptions {
            hosts: vec![("10.0.0.1".into(), 5432), ("::1".into(), 5433)],
            ..ConnectionOptions::default()
        };
        let e = export(&c, &options);
        assert_eq!(
            e.uri(),
            "postgresql://idp-dev-my-db-write:Abc123@10.0.0.1:5432,[::1]:5433/idp-dev-my-db\
             ?sslmode=require&target_session_attrs=read-write"
        );
        assert_eq!(
            e.jdbc(),
            "jdbc:postgresql://10.0.0.1:5432,[::1]:5433/idp-dev-my-db?user=idp-dev-my-db-write\
             &password=Abc123&sslmode=require&targetServerType=primary"
        );
        // The host and port keys keep the one address (the primary or the configured endpoint).
        let json = e.json();
        assert_eq!(
            (json["endpoint"].as_str(), json["port"].as_u64()),
            (Some("db.internal"), Some(5432))
        );
        assert!(
            e.env().contains("DATABASE_URL=")
                && e.env().contains("target_session_attrs=read-write")
        );
    }

    #[test]
    fn uri_with_verify_full_names_the_ca() {
        let c = credential("Abc123");
        let options = ConnectionOptions {
            sslmode: SslMode::VerifyFull,
            sslrootcert: Some(PathBuf::from("/tmp/my state/ca&1.crt")),
            ..ConnectionOptions::default()
        };
        assert_eq!(
            export(&c, &options).uri(),
            "postgresql://idp-dev-my-db-write:Abc123@db.internal:5432/idp-dev-my-db\
             ?sslmode=verify-full&sslrootcert=/tmp/my%20state/ca%261.crt"
        );
    }

    #[test]
    fn uri_and_jdbc_escape_every_component() {
        let mut c = credential("p@ss:w/o rd?&+#%");
        c.endpoint = "::1".into();
        let options = ConnectionOptions::default();
        let e = export(&c, &options);
        assert_eq!(
            e.uri(),
            "postgresql://idp-dev-my-db-write:p%40ss%3Aw%2Fo%20rd%3F%26%2B%23%25@[::1]:5432/idp-dev-my-db?sslmode=require"
        );
        assert_eq!(
            e.jdbc(),
            "jdbc:postgresql://[::1]:5432/idp-dev-my-db?user=idp-dev-my-db-write\
             &password=p%40ss%3Aw%2Fo%20rd%3F%26%2B%23%25&sslmode=require"
        );
    }

    #[test]
    fn jdbc_carries_user_password_and_ssl() {
        let c = credential("Abc123");
        let options = verify_full();
        assert_eq!(
            export(&c, &options).jdbc(),
            "jdbc:postgresql://db.internal:5432/idp-dev-my-db?user=idp-dev-my-db-write\
             &password=Abc123&sslmode=verify-full&sslrootcert=/var/lib/pgtenant/cluster/ca.crt"
        );
    }

    #[test]
    fn env_has_the_platform_variables_quoted() {
        let c = credential("it's");
        let options = ConnectionOptions::default();
        let text = export(&c, &options).env();
        let names: Vec<&str> = text
            .lines()
            .map(|line| line.split_once('=').unwrap().0)
            .collect();
        assert_eq!(
            names,
            [
                "DB_NAME",
                "DB_USER",
                "DB_PASSWORD",
                "DB_HOST",
                "DB_PORT",
                "DB_SSLMODE",
                "DATABASE_URL"
            ]
        );
        assert!(text.contains("DB_PASSWORD='it'\\''s'\n"), "{text}");
        assert!(text.contains("DB_PORT='5432'\n"), "{text}");
        assert!(text.contains("DB_SSLMODE='require'\n"), "{text}");

        let options = verify_full();
        let text = export(&c, &options).env();
        assert!(
            text.contains("DB_SSLROOTCERT='/var/lib/pgtenant/cluster/ca.crt'\n"),
            "{text}"
        );
        assert!(text.contains("DB_SSLMODE='verify-full'\n"), "{text}");
    }

    fn pooled(password: &str) -> Credential {
        Credential {
            pooler: Some(crate::PoolerAddress {
                endpoint: "pooler.internal".into(),
                port: 6432,
            }),
            ..credential(password)
        }
    }

    #[test]
    fn unpooled_credentials_have_no_pooler_keys() {
        let c = credential("Abc123");
        let options = ConnectionOptions::default();
        let e = export(&c, &options);
        for format in ExportFormat::ALL {
            let text = e.render(format);
            for key in ["pooler", "POOLER", "pgbouncer"] {
                assert!(!text.contains(key), "{} has {key}: {text}", format.name());
            }
        }
        assert_eq!(e.pooled(), None);
    }

    #[test]
    fn pooled_credentials_carry_the_pooled_endpoint_in_every_format() {
        let c = pooled("p@ss");
        let options = verify_full();
        let e = export(&c, &options);
        let pooler_uri =
            "postgresql://idp-dev-my-db-write:p%40ss@pooler.internal:6432/idp-dev-my-db\
                          ?sslmode=verify-full&sslrootcert=/var/lib/pgtenant/cluster/ca.crt";
        let pooler_jdbc = "jdbc:postgresql://pooler.internal:6432/idp-dev-my-db?user=idp-dev-my-db-write\
                           &password=p%40ss&sslmode=verify-full&sslrootcert=/var/lib/pgtenant/cluster/ca.crt";
        assert_eq!(e.pooler_uri().as_deref(), Some(pooler_uri));
        assert_eq!(e.pooler_jdbc().as_deref(), Some(pooler_jdbc));

        // JSON: the direct keys unchanged, the pooler's beside them.
        let json = e.json();
        assert_eq!(json["endpoint"], "db.internal");
        assert_eq!(json["port"], 5432);
        assert_eq!(json["pooler_endpoint"], "pooler.internal");
        assert_eq!(json["pooler_port"], 6432);
        assert_eq!(json["pooler_uri"], pooler_uri);
        assert_eq!(json["pooler_jdbc"], pooler_jdbc);
        assert_eq!(json["uri"], e.uri());

        // env: the pooler's variables after the direct ones.
        let vars = e.env_vars();
        let names: Vec<&str> = vars.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            &names[names.len() - 4..],
            [
                "DATABASE_URL",
                "DB_POOLER_HOST",
                "DB_POOLER_PORT",
                "DATABASE_POOLER_URL"
            ]
        );
        assert!(vars.contains(&("DB_HOST", "db.internal".into())));
        assert!(vars.contains(&("DB_POOLER_HOST", "pooler.internal".into())));
        assert!(vars.contains(&("DB_POOLER_PORT", "6432".into())));
        assert!(vars.contains(&("DATABASE_POOLER_URL", pooler_uri.into())));

        // Kubernetes Secret: PGO's key names.
        let text = e.k8s_secret();
        let doc = load_yaml(&text);
        assert_eq!(
            yaml_string(&doc, &["stringData", "endpoint"]),
            "db.internal"
        );
        assert_eq!(
            yaml_string(&doc, &["stringData", "pgbouncer-host"]),
            "pooler.internal"
        );
        assert_eq!(yaml_string(&doc, &["stringData", "pgbouncer-port"]), "6432");
        assert_eq!(
            yaml_string(&doc, &["stringData", "pgbouncer-uri"]),
            pooler_uri
        );
        assert_eq!(
            yaml_string(&doc, &["stringData", "pgbouncer-jdbc-uri"]),
            pooler_jdbc
        );

        // ExternalSecret: the pooler's properties of the stored secret, no password.
        let text = e.external_secret();
        assert!(!text.contains("p@ss") && !text.contains("p%40ss"), "{text}");
        for property in ["pooler_endpoint", "pooler_port", "endpoint", "port"] {
            assert!(
                text.contains(&format!("property: {property}\n")),
                "{property}: {text}"
            );
        }

        // psql --pooled connects to the pooler as the same login, to the same database.
        let through = e.pooled().unwrap();
        assert_eq!(
            (through.endpoint.as_str(), through.port),
            ("pooler.internal", 6432)
        );
        assert_eq!(
            (through.username, through.dbname),
            (c.username.clone(), c.dbname.clone())
        );
    }

    #[test]
    fn env_reads_back_through_a_shell() {
        let c = credential("a'b\"c$d`e\\f g");
        let options = verify_full();
        let text = export(&c, &options).env();
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{text}printf '%s' \"$DB_PASSWORD\""))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(output.stdout).unwrap(), c.password);
    }

    #[test]
    fn libpq_env_names_the_ca_only_when_given() {
        let c = credential("Abc123");
        let options = ConnectionOptions::default();
        let vars = export(&c, &options).libpq_env();
        let names: Vec<&str> = vars.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "PGHOST",
                "PGPORT",
                "PGUSER",
                "PGPASSWORD",
                "PGDATABASE",
                "PGSSLMODE"
            ]
        );
        let options = verify_full();
        let vars = export(&c, &options).libpq_env();
        assert!(vars.contains(&("PGSSLMODE", "verify-full".into())));
        assert!(vars.contains(&("PGSSLROOTCERT", "/var/lib/pgtenant/cluster/ca.crt".into())));
    }

    #[test]
    fn pgpass_escapes_colons_and_backslashes() {
        let c = credential(r"a:b\c");
        let options = ConnectionOptions::default();
        assert_eq!(
            export(&c, &options).pgpass(),
            r"db.internal:5432:idp-dev-my-db:idp-dev-my-db-write:a\:b\\c"
        );
        let mut c = credential("x");
        c.endpoint = "::1".into();
        assert_eq!(
            export(&c, &options).pgpass(),
            r"\:\:1:5432:idp-dev-my-db:idp-dev-my-db-write:x"
        );
    }

    #[test]
    fn json_keeps_the_credentials_keys() {
        let c = credential("Abc123");
        let options = ConnectionOptions::default();
        let e = export(&c, &options);
        let value: Value = serde_json::from_str(&e.render(ExportFormat::Json)).unwrap();
        for key in [
            "username", "password", "endpoint", "port", "dbname", "sslmode", "uri",
        ] {
            assert!(value.get(key).is_some(), "{key} missing: {value:#}");
        }
        assert_eq!(value["port"], 5432);
        assert_eq!(value["sslmode"], "require");
        assert_eq!(value["sslrootcert"], Value::Null);
        assert_eq!(value["uri"], e.uri());
        assert_eq!(value["jdbc"], e.jdbc());
    }

    #[test]
    fn k8s_secret_is_a_valid_secret_manifest() {
        // A password that YAML would misread unquoted.
        for password in ["yes", "0123", "a: b # c", "\"quoted\"\n'x'", "~"] {
            let c = credential(password);
            let options = verify_full();
            let e = export(&c, &options);
            let text = e.render(ExportFormat::K8sSecret);
            let doc = load_yaml(&text);
            assert_eq!(yaml_string(&doc, &["apiVersion"]), "v1");
            assert_eq!(yaml_string(&doc, &["kind"]), "Secret");
            assert_eq!(yaml_string(&doc, &["type"]), "Opaque");
            assert_eq!(
                yaml_string(&doc, &["metadata", "name"]),
                "idp-dev-my-db-write"
            );
            assert_eq!(yaml_string(&doc, &["metadata", "namespace"]), "idp-dev");
            let data = doc.as_mapping_get("stringData").unwrap();
            let keys: Vec<&str> = data
                .as_mapping()
                .unwrap()
                .keys()
                .map(|k| k.as_str().unwrap())
                .collect();
            assert_eq!(
                keys,
                ["username", "password", "endpoint", "port", "dbname", "uri", "jdbc-uri"]
            );
            let get = |key: &str| yaml_string(&doc, &["stringData", key]).to_string();
            assert_eq!(get("password"), password);
            assert_eq!(get("username"), "idp-dev-my-db-write");
            assert_eq!(get("endpoint"), "db.internal");
            // Secret values must be strings: the port too.
            assert_eq!(get("port"), "5432");
            assert_eq!(get("dbname"), "idp-dev-my-db");
            assert_eq!(get("uri"), e.uri());
            assert_eq!(get("jdbc-uri"), e.jdbc());
        }
    }

    #[test]
    fn external_secret_matches_the_platform_manifest() {
        let c = credential("SuperSecret123");
        let options = ConnectionOptions::default();
        let text = export(&c, &options).render(ExportFormat::ExternalSecret);
        assert!(!text.contains("SuperSecret123"), "{text}");
        let doc = load_yaml(&text);
        assert_eq!(yaml_string(&doc, &["apiVersion"]), "external-secrets.io/v1");
        assert_eq!(yaml_string(&doc, &["kind"]), "ExternalSecret");
        assert_eq!(
            yaml_string(&doc, &["metadata", "name"]),
            "idp-dev-my-db-write"
        );
        assert_eq!(yaml_string(&doc, &["metadata", "namespace"]), "idp-dev");
        assert_eq!(yaml_string(&doc, &["spec", "refreshInterval"]), "1h");
        assert_eq!(
            yaml_string(&doc, &["spec", "secretStoreRef", "name"]),
            "aws-secrets"
        );
        assert_eq!(
            yaml_string(&doc, &["spec", "secretStoreRef", "kind"]),
            "ClusterSecretStore"
        );
        assert_eq!(
            yaml_string(&doc, &["spec", "target", "name"]),
            "idp-dev-my-db-write"
        );
        let data = doc["spec"]["data"].as_sequence().unwrap();
        let entries: Vec<(&str, &str, &str)> = data
            .iter()
            .map(|entry| {
                (
                    yaml_string(entry, &["secretKey"]),
                    yaml_string(entry, &["remoteRef", "key"]),
                    yaml_string(entry, &["remoteRef", "property"]),
                )
            })
            .collect();
        let key = "customer/idp-dev/my-db-write";
        assert_eq!(
            entries,
            [
                ("username", key, "username"),
                ("password", key, "password"),
                ("endpoint", key, "endpoint"),
                ("port", key, "port"),
            ]
        );
    }

    #[test]
    fn formats_have_distinct_extensions_and_names() {
        let mut extensions: Vec<&str> = ExportFormat::ALL.iter().map(|f| f.extension()).collect();
        extensions.sort();
        extensions.dedup();
        assert_eq!(extensions.len(), ExportFormat::ALL.len());
        assert!(ExportFormat::ALL
            .iter()
            .all(|f| f.contains_password() == (*f != ExportFormat::ExternalSecret)));
        for mode in SslMode::ALL {
            assert_eq!(SslMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(SslMode::parse("verify_full"), None);
    }

    #[test]
    fn every_format_ends_with_a_newline() {
        let c = credential("Abc123");
        let options = verify_full();
        for format in ExportFormat::ALL {
            let text = export(&c, &options).render(format);
            assert!(text.ends_with('\n'), "{format:?}: {text}");
            assert!(!text.ends_with("\n\n"), "{format:?}: {text}");
        }
    }
}
