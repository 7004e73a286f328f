//! Connecting as a tenant role: `psql`, `url`, `ca` and `doctor`. Failed logins are explained with
//! their cause and fix (the platform's "Common errors"), by SQLSTATE and server message.

use crate::render::{out, outln};
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use anyhow::{anyhow, bail, Context as _, Result};
use pgtenant_engine::{Connector, EngineError};
use pgtenant_secrets::{ConnectionOptions, Export, SslMode};
use serde_json::json;

use crate::commands::credentials::{self, RoleArg, SslArgs};
use crate::context::Context;
use crate::render::{print_json, Format};
use crate::{EXIT_ERROR, EXIT_OK};

#[derive(clap::Args)]
pub struct PsqlArgs {
    /// NAMESPACE/DATABASE, as declared in the repo.
    pub tenant: String,
    /// read for looking around, write for fixing data (have the queries reviewed), admin only in
    /// emergencies and for migrations.
    #[arg(long, value_enum, default_value_t = RoleArg::Read)]
    pub role: RoleArg,
    #[command(flatten)]
    pub ssl: SslArgs,
    /// Skip the login check that explains a failure before psql starts.
    #[arg(long)]
    pub no_check: bool,
    /// Connect through the cluster's pooler (pgbouncer), the pooled endpoint of the credentials.
    #[arg(long)]
    pub pooled: bool,
    /// Arguments for psql, after `--` (for example `-- -c 'SELECT 1'`).
    #[arg(last = true)]
    pub psql_args: Vec<String>,
}

#[derive(clap::Args)]
pub struct UrlArgs {
    /// NAMESPACE/DATABASE, as declared in the repo.
    pub tenant: String,
    #[arg(long, value_enum, help = RoleArg::help("The role"))]
    pub role: RoleArg,
    #[command(flatten)]
    pub ssl: SslArgs,
}

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// NAMESPACE/DATABASE, as declared in the repo.
    pub tenant: String,
    #[arg(
        long = "role",
        value_enum,
        help = RoleArg::help("Only these roles (repeatable) [default: every role the store holds credentials for]")
    )]
    pub roles: Vec<RoleArg>,
    #[command(flatten)]
    pub ssl: SslArgs,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn psql(context: &Context, args: &PsqlArgs) -> Result<u8> {
    let (context, options, loaded) =
        credentials::load_at_home(context, &args.tenant, args.role, |c| {
            credentials::connection_options(c, args.ssl.sslmode)
        })?;
    if args.role == RoleArg::Admin {
        eprintln!(
            "warning: connecting as {}, the database owner: use admin only in emergencies and for \
             migrations; read (the default) or write for everything else",
            loaded.credential.username
        );
    }
    let direct = loaded.export(&options);
    let pooled = match args.pooled {
        true => Some(
            direct
                .pooled()
                .ok_or_else(|| no_pooled_endpoint(context, &args.tenant))?,
        ),
        false => None,
    };
    let export = match &pooled {
        Some(credential) => Export {
            credential,
            ..direct
        },
        None => direct,
    };
    if !args.no_check {
        runtime()?.block_on(probe(&export))?;
    }
    let mut psql = Command::new("psql");
    psql.args(&args.psql_args);
    // The password goes through the environment: a command line is visible to everyone in `ps`.
    // Inherited variables that would send psql elsewhere go, and so do pgtenant's own settings:
    // PGTENANT_ADMIN_URL holds the control role's password, which a tenant's psql session (and
    // its `\!` shell) must not see.
    export.client_env().apply_interactive(&mut psql);
    let error = psql.exec();
    Err(match error.kind() {
        std::io::ErrorKind::NotFound => anyhow!(
            "psql is not installed (not found in PATH): install the PostgreSQL client, e.g. \
             `apt-get install postgresql-client`"
        ),
        _ => anyhow::Error::new(error).context("starting psql"),
    })
}

/// Why `psql --pooled` has nowhere to connect, and what to do.
fn no_pooled_endpoint(context: &Context, tenant: &str) -> anyhow::Error {
    // The config's pooler, or the embedded cluster's.
    let pooler = context
        .pooler_endpoint()
        .or_else(|| context.connect().ok().and_then(|c| c.pooler_endpoint));
    match pooler {
        Some(pooler) => anyhow!(
            "the credentials of {tenant} carry no pooled endpoint: run `pgtenant apply` to write \
             the pooler's ({}:{}) into them; a database with `pooling: none` is never pooled \
             (connect without --pooled)",
            pooler.host,
            pooler.port
        ),
        None => anyhow!(
            "the cluster `{}` has no pooler, so {tenant} has no pooled endpoint: add \
             `pooler: {{listen: HOST:PORT}}` to the cluster in pgtenant.yaml (docs/pooling.md), \
             or for the embedded cluster install pgbouncer and run `pgtenant up`; then \
             `pgtenant apply`. Without --pooled psql connects directly",
            context.cluster_name()
        ),
    }
}

pub fn url(context: &Context, args: &UrlArgs) -> Result<u8> {
    let (_, options, loaded) = credentials::load_at_home(context, &args.tenant, args.role, |c| {
        credentials::connection_options(c, args.ssl.sslmode)
    })?;
    outln!("{}", loaded.export(&options).uri());
    Ok(EXIT_OK)
}

/// `ca`: the CA bundle that verifies the cluster's server certificate.
pub fn ca(context: &Context) -> Result<u8> {
    let file = context.ca_file()?.context(
        "no CA is known for a cluster given by admin URL: pass its CA with --ca-file FILE \
         (or PGTENANT_CA_FILE)",
    )?;
    let pem = match std::fs::read_to_string(&file) {
        Ok(pem) => pem,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
            "the CA file {} does not exist: for the embedded cluster run `pgtenant up` first",
            file.display()
        ),
        Err(error) => {
            return Err(error).with_context(|| format!("reading the CA file {}", file.display()))
        }
    };
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            file.display()
        );
    }
    out!("{pem}");
    if !pem.ends_with('\n') {
        outln!();
    }
    Ok(EXIT_OK)
}

/// `doctor`: logs in as each role with its stored credentials and explains what fails.
pub fn doctor(context: &Context, args: &DoctorArgs) -> Result<u8> {
    let options = credentials::connection_options(context, args.ssl.sslmode)?;
    let store = context.store()?;
    let (namespace, name) = crate::commands::parse_tenant(&args.tenant)?;
    // Without the repo the preset is unknown: check the login roles the store has credentials for.
    let roles: Vec<RoleArg> = match args.roles.is_empty() {
        true => credentials::stored_roles(store.as_ref(), namespace, name),
        false => RoleArg::ALL
            .into_iter()
            .filter(|role| args.roles.contains(role))
            .collect(),
    };
    if roles.is_empty() {
        bail!(
            "{} has no stored credentials (none at customer/{namespace}/{name}-<role>): is it \
             declared in the repo, and has `pgtenant apply` run?",
            args.tenant
        );
    }
    let runtime = runtime()?;
    let mut checks = Vec::new();
    for role in roles {
        let result = credentials::load(context, &args.tenant, role).and_then(|loaded| {
            let session = runtime.block_on(probe(&loaded.export(&options)))?;
            Ok((loaded, session))
        });
        checks.push((role, result));
    }
    let ok = checks.iter().all(|(_, result)| result.is_ok());
    if args.format == Format::Json {
        let checks: Vec<_> = checks
            .iter()
            .map(|(role, result)| match result {
                Ok((loaded, session)) => json!({
                    "role": role.as_str(),
                    "username": loaded.credential.username,
                    "ok": true,
                    "tls": session.tls_version,
                    "error": null,
                }),
                Err(error) => json!({
                    "role": role.as_str(),
                    "ok": false,
                    "error": error.to_string(),
                    "causes": error.chain().skip(1).map(|c| c.to_string()).collect::<Vec<_>>(),
                }),
            })
            .collect();
        print_json(&json!({
            "ok": ok,
            "tenant": args.tenant,
            "sslmode": options.sslmode.as_str(),
            "checks": checks,
        }))?;
    } else {
        for (role, result) in &checks {
            match result {
                Ok((loaded, session)) => outln!(
                    "ok    {:<5}  {} logs in to {} ({})",
                    role.as_str(),
                    loaded.credential.username,
                    loaded.credential.dbname,
                    session.tls_version.as_deref().unwrap_or("no TLS")
                ),
                Err(error) => {
                    outln!("FAIL  {:<5}  {error}", role.as_str());
                    let causes: Vec<String> =
                        error.chain().skip(1).map(|c| c.to_string()).collect();
                    if !causes.is_empty() {
                        outln!("             {}", causes.join(": "));
                    }
                }
            }
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_ERROR })
}

use crate::commands::reconcile::runtime;

/// What a successful login saw.
pub struct Session {
    pub tls_version: Option<String>,
}

/// Logs in the way the application would (same URI), so a failure is explained before psql or an
/// app meets it.
async fn probe(export: &Export<'_>) -> Result<Session> {
    let credential = export.credential;
    let target = format!(
        "cannot log in as {} to {} at {}:{} (sslmode={})",
        credential.username,
        credential.dbname,
        credential.endpoint,
        credential.port,
        export.options.sslmode.as_str()
    );
    let connector = Connector::from_url(&export.uri())
        .with_context(|| target.clone())?
        .as_application();
    let client = match connector.connect(None).await {
        Ok(client) => client,
        Err(EngineError::Connect { source, .. }) => {
            let facts = Facts::of(export);
            let explanation = match source.as_db_error() {
                Some(db) => explain_server(db.code().code(), db.message(), &facts),
                None => explain_client(&pgtenant_engine::error_chain(&source), &facts),
            };
            let error = anyhow::Error::new(source).context(target);
            return Err(match explanation {
                Some(explanation) => error.context(explanation),
                None => error,
            });
        }
        Err(other) => return Err(anyhow::Error::new(other).context(target)),
    };
    let tls_version: Option<String> = client
        .query_opt(
            "SELECT version FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid() AND ssl",
            &[],
        )
        .await
        .ok()
        .flatten()
        .and_then(|row| row.get(0));
    Ok(Session { tls_version })
}

/// What the explanations name.
struct Facts {
    tenant: String,
    role: String,
    username: String,
    dbname: String,
    host: String,
    port: u16,
    sslmode: SslMode,
    ca: Option<String>,
}

impl Facts {
    fn of(export: &Export<'_>) -> Facts {
        let options: &ConnectionOptions = export.options;
        Facts {
            tenant: pgtenant_spec::TenantId::new(export.tenant.namespace, export.tenant.database)
                .to_string(),
            role: export.tenant.role.to_string(),
            username: export.credential.username.clone(),
            dbname: export.credential.dbname.clone(),
            host: export.credential.endpoint.clone(),
            port: export.credential.port,
            sslmode: options.sslmode,
            ca: options
                .sslrootcert
                .as_ref()
                .map(|ca| ca.display().to_string()),
        }
    }
}

/// A server error (SQLSTATE and primary message) → one line of cause and fix.
fn explain_server(sqlstate: &str, message: &str, f: &Facts) -> Option<String> {
    let Facts {
        tenant,
        role,
        username,
        dbname,
        ..
    } = f;
    Some(match sqlstate {
        // invalid_authorization_specification: pg_hba.conf refusals and NOLOGIN roles. PostgreSQL
        // gives "no encryption" no code of its own, so the message tells it apart.
        "28000"
            if message.contains("no pg_hba.conf entry") && message.contains("no encryption") =>
        {
            format!(
                "SSL is required: the cluster refuses unencrypted connections (sslmode={}); \
                 use sslmode=require (or verify-full with the cluster's CA) in your connection \
                 string / connection settings",
                f.sslmode.as_str()
            )
        }
        "28000" if message.contains("no pg_hba.conf entry") => format!(
            "the server's pg_hba.conf admits no connection like this one for {username}: connect \
             from an allowed network with sslmode=require, or ask the cluster's operator"
        ),
        "28000" if message.contains("not permitted to log in") => format!(
            "{username} may not log in (NOLOGIN): run `pgtenant apply`, which repairs the \
             tenant's roles"
        ),
        // invalid_password: also what a role that does not exist gets.
        "28P01" => format!(
            "the password of {username} was refused: the credentials are stale (the role was \
             rotated, or its password changed, after they were fetched) or the role does not \
             exist; fetch them again with `pgtenant credentials {tenant} --role {role}`, and if \
             the stored ones fail too, `pgtenant rotate {tenant} --role {role}` issues a new \
             password (`pgtenant apply` creates missing roles)"
        ),
        // invalid_catalog_name
        "3D000" => format!(
            "database {dbname} does not exist: declare {tenant} in the apps repo and run \
             `pgtenant apply`"
        ),
        // too_many_connections: the server's max_connections or the role's connection limit.
        "53300" => format!(
            "too many connections ({message}): close idle sessions or pool connections (fewer \
             connections per app instance, or a pooler such as PgBouncer), then retry"
        ),
        "42501" if message.contains("permission denied for database") => format!(
            "{username} lacks CONNECT on {dbname}: run `pgtenant apply`, which repairs the grants"
        ),
        // cannot_connect_now
        "57P03" => {
            "the server is starting up, shutting down or recovering: retry in a moment".to_string()
        }
        _ => return None,
    })
}

/// A failure without a server error (network, TLS) → one line of cause and fix.
fn explain_client(text: &str, f: &Facts) -> Option<String> {
    let Facts { host, port, .. } = f;
    let ca = f.ca.as_deref().unwrap_or("sslrootcert");
    let text_lower = text.to_lowercase();
    let has = |needle: &str| text_lower.contains(&needle.to_lowercase());
    Some(
        if has("UnknownIssuer") || has("unknown issuer") || has("BadSignature") {
            format!(
                "the server's certificate is not signed by the CA in {ca}: give this cluster's CA \
             with --ca-file (or PGTENANT_CA_FILE)"
            )
        } else if has("NotValidForName") || has("not valid for name") {
            format!(
            "the server's certificate does not name the host {host}: connect with a host name the \
             certificate lists (--endpoint), or use sslmode=require if identity checks are not \
             needed"
        )
        } else if has("Expired") {
            "the server's certificate has expired: the cluster's operator must renew it".to_string()
        } else if has("server does not support TLS") || has("does not support SSL") {
            format!(
            "the server at {host}:{port} does not offer SSL, which the platform requires: check \
             the endpoint"
        )
        } else if has("connection refused") {
            format!(
            "nothing accepts connections at {host}:{port}: is the server running (`pgtenant up` \
             for the embedded cluster) and is the endpoint right?"
        )
        } else if has("timed out") || has("timeout") {
            format!("no answer from {host}:{port}: check the endpoint, the network and firewalls")
        } else if has("failed to lookup address") || has("name or service not known") {
            format!("the host name {host} does not resolve: check the endpoint")
        } else {
            return None;
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            tenant: "idp-dev/my-db".into(),
            role: "read".into(),
            username: "idp-dev-my-db-read".into(),
            dbname: "idp-dev-my-db".into(),
            host: "db.internal".into(),
            port: 5432,
            sslmode: SslMode::Disable,
            ca: Some("/ca.crt".into()),
        }
    }

    #[test]
    fn no_encryption_is_told_apart_from_other_hba_refusals() {
        let f = facts();
        let no_ssl = explain_server(
            "28000",
            "no pg_hba.conf entry for host \"127.0.0.1\", user \"u\", database \"d\", no encryption",
            &f,
        )
        .unwrap();
        assert!(no_ssl.starts_with("SSL is required"), "{no_ssl}");
        assert!(no_ssl.contains("sslmode=require"), "{no_ssl}");
        let other = explain_server(
            "28000",
            "no pg_hba.conf entry for host \"10.0.0.1\", user \"u\", database \"d\", SSL encryption",
            &f,
        )
        .unwrap();
        assert!(!other.contains("SSL is required"), "{other}");
    }

    #[test]
    fn server_errors_have_a_cause_and_a_fix() {
        let f = facts();
        let stale = explain_server("28P01", "password authentication failed", &f).unwrap();
        assert!(stale.contains("stale"), "{stale}");
        assert!(
            stale.contains("pgtenant credentials idp-dev/my-db --role read"),
            "{stale}"
        );
        let missing = explain_server("3D000", "database \"x\" does not exist", &f).unwrap();
        assert!(missing.contains("declare idp-dev/my-db"), "{missing}");
        assert!(missing.contains("pgtenant apply"), "{missing}");
        let busy = explain_server("53300", "too many connections for role \"x\"", &f).unwrap();
        assert!(busy.contains("too many connections"), "{busy}");
        assert!(explain_server("XX000", "internal error", &f).is_none());
        for explanation in [stale, missing, busy] {
            assert!(!explanation.contains('\n'), "one line: {explanation}");
        }
    }

    #[test]
    fn tls_and_network_failures_are_explained() {
        let f = facts();
        let issuer = explain_client(
            "error performing TLS handshake: invalid peer certificate: UnknownIssuer",
            &f,
        )
        .unwrap();
        assert!(issuer.contains("/ca.crt"), "{issuer}");
        let name = explain_client(
            "invalid peer certificate: certificate not valid for name \"x\"",
            &f,
        )
        .unwrap();
        assert!(name.contains("does not name the host"), "{name}");
        let refused = explain_client(
            "error connecting to server: Connection refused (os error 111)",
            &f,
        )
        .unwrap();
        assert!(refused.contains("db.internal:5432"), "{refused}");
        assert!(explain_client("something else", &f).is_none());
    }
}
