//! `credentials`: a tenant role's credentials from the store, in the formats applications use.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;
use pgtenant_secrets::{Credential, SecretPath};
use serde_json::json;

use crate::context::Context;
use crate::render::print_json;
use crate::EXIT_OK;

#[derive(clap::Args)]
pub struct CredentialsArgs {
    /// NAMESPACE/DATABASE, as declared in the repo.
    pub tenant: String,
    #[arg(long, value_enum)]
    pub role: RoleArg,
    #[arg(long, value_enum, default_value_t = CredentialFormat::Json)]
    pub format: CredentialFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Write,
    Read,
}

impl RoleArg {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleArg::Admin => "admin",
            RoleArg::Write => "write",
            RoleArg::Read => "read",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CredentialFormat {
    Json,
    Env,
    Uri,
}

pub fn run(context: &Context, args: &CredentialsArgs) -> Result<u8> {
    let (tenant, role, format) = (args.tenant.as_str(), args.role, args.format);
    let Some((namespace, database)) = tenant.split_once('/') else {
        bail!("`{tenant}` is not NAMESPACE/DATABASE (for example idp-dev/my-db)");
    };
    if !pgtenant_spec::is_dns_label(namespace) || !pgtenant_spec::is_dns_label(database) {
        bail!("`{tenant}` is not NAMESPACE/DATABASE with lowercase letters, digits and '-' only");
    }
    let path = SecretPath::for_role(namespace, database, role.as_str());
    let store = context.store()?;
    let credential = store
        .get(&path)
        .with_context(|| format!("reading {path} from the credential store"))?
        .with_context(|| {
            format!("no stored credentials at {path}: is {tenant} declared in the repo, and has `pgtenant apply` run?")
        })?;
    print(&credential, format)?;
    Ok(EXIT_OK)
}

fn print(credential: &Credential, format: CredentialFormat) -> Result<()> {
    const SSLMODE: &str = "require";
    let uri = format!(
        "postgresql://{}:{}@{}:{}/{}?sslmode={SSLMODE}",
        credential.username,
        credential.password,
        uri_host(&credential.endpoint),
        credential.port,
        credential.dbname
    );
    match format {
        CredentialFormat::Json => print_json(&json!({
            "username": credential.username,
            "password": credential.password,
            "endpoint": credential.endpoint,
            "port": credential.port,
            "dbname": credential.dbname,
            "sslmode": SSLMODE,
            "uri": uri,
        })),
        CredentialFormat::Uri => {
            println!("{uri}");
            Ok(())
        }
        CredentialFormat::Env => {
            let vars = BTreeMap::from([
                ("DB_NAME", credential.dbname.clone()),
                ("DB_USER", credential.username.clone()),
                ("DB_PASSWORD", credential.password.clone()),
                ("DB_HOST", credential.endpoint.clone()),
                ("DB_PORT", credential.port.to_string()),
                ("DB_SSLMODE", SSLMODE.to_string()),
                ("DATABASE_URL", uri),
            ]);
            for (name, value) in vars {
                println!("{name}={}", shell_quote(&value));
            }
            Ok(())
        }
    }
}

fn uri_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Single quotes make any value literal in POSIX shells and in dotenv files.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}
