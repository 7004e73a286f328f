//! `rotate`: new passwords for a tenant's roles, crash-safe, optionally with a grace period.

use crate::render::outln;
use anyhow::{bail, Context as _, Result};
use pgtenant_engine::rotate::Rotator;
use pgtenant_engine::{ApplyLock, DesiredTenant, RoleKind};
use pgtenant_spec::Mode;
use serde_json::json;

use crate::commands::credentials::{stored_roles, RoleArg};
use crate::commands::parse_tenant;
use crate::commands::reconcile::runtime;
use crate::context::Context;
use crate::render::{print_json, Format};
use crate::EXIT_OK;

#[derive(clap::Args)]
pub struct RotateArgs {
    /// NAMESPACE/DATABASE, as declared in the repo.
    #[arg(required_unless_present = "pooler_lookup")]
    pub tenant: Option<String>,
    #[arg(
        long,
        value_enum,
        required_unless_present_any = ["all", "pooler_lookup"],
        conflicts_with = "all",
        help = RoleArg::help("The role to rotate")
    )]
    pub role: Option<RoleArg>,
    #[arg(
        long,
        help = format!(
            "Rotate every login role the store holds credentials for: all of the tenant's preset ({})",
            RoleArg::by_preset()
        )
    )]
    pub all: bool,
    /// Zero downtime: switch to the role's second login (`<role>-alt`) with a new password; the
    /// credentials apps hold now stay valid until the next grace rotation.
    #[arg(long)]
    pub grace: bool,
    /// Rotate the cluster's pooler lookup login instead (`pooler.auth: query`; the cluster is
    /// `--cluster`): a new password in the store at `pgtenant/pooler/<cluster>-lookup`, set on
    /// the server, written into pgbouncer's auth file and RELOADed. Pooled sessions stay open.
    #[arg(long, conflicts_with_all = ["tenant", "role", "all", "grace"])]
    pub pooler_lookup: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(context: &Context, args: &RotateArgs) -> Result<u8> {
    let Some(tenant) = args.tenant.as_deref().filter(|_| !args.pooler_lookup) else {
        return rotate_pooler_lookup(context, args.format);
    };
    let (namespace, name) = parse_tenant(tenant)?;
    let tenant = DesiredTenant::new(namespace, name, Mode::default());
    let store = context.store()?;
    let kinds: Vec<RoleKind> = match args.role {
        Some(role) => vec![RoleKind::parse(role.as_str()).expect("RoleArg names a RoleKind")],
        // Every login role the store holds credentials for: rotate needs no repo to know the preset.
        None => stored_roles(store.as_ref(), namespace, name)
            .into_iter()
            .map(|role| RoleKind::parse(role.as_str()).expect("RoleArg names a RoleKind"))
            .collect(),
    };
    if kinds.is_empty() {
        bail!(
            "{} has no stored credentials, so --all has nothing to rotate: is it declared in the \
             repo, and has `pgtenant apply` run?",
            tenant.id
        );
    }
    let connected = context.connect()?;
    let runtime = runtime()?;
    let (recovered, rotated) = runtime.block_on(async {
        let _lock = ApplyLock::acquire(&connected.connector).await?;
        let rotator = Rotator {
            connector: &connected.connector,
            store: store.as_ref(),
        };
        let recovered = rotator.recover_all().await?;
        let mut rotated = Vec::new();
        for kind in kinds {
            let done = rotator
                .rotate(&tenant, kind, args.grace)
                .await
                .with_context(|| format!("rotating the {} role of {}", kind.as_str(), tenant.id))?;
            rotated.push(done);
        }
        if let Some(pooler) = crate::commands::cluster::pooler_of(context)? {
            let logins: Vec<_> = rotated
                .iter()
                .map(|r| {
                    let role =
                        pgtenant_engine::desired::role_name(tenant.database.as_str(), r.role);
                    let path =
                        pgtenant_secrets::SecretPath::for_role(namespace, name, r.role.as_str());
                    (role, path)
                })
                .collect();
            // The rotation stands whatever happens here; `check` shows a pooler left behind.
            if let Err(error) = pooler
                .sync_logins(&connected.connector, store.as_ref(), &logins, None)
                .await
            {
                eprintln!(
                    "warning: the pooler could not be updated: {}",
                    pgtenant_engine::error_chain(&error)
                );
            }
        }
        anyhow::Ok((recovered, rotated))
    })?;
    if rotated.is_empty() {
        bail!("nothing rotated");
    }
    match args.format {
        Format::Json => print_json(&json!({ "rotated": rotated, "recovered": recovered }))?,
        Format::Text => {
            for r in &recovered {
                eprintln!("{r}");
            }
            for r in &rotated {
                let grace = if r.grace {
                    " (grace: the previous login keeps working until the next grace rotation)"
                } else {
                    ""
                };
                outln!(
                    "rotated {} {}: now `{}`{grace}",
                    r.tenant,
                    r.role.as_str(),
                    r.username
                );
            }
        }
    }
    Ok(EXIT_OK)
}

/// `rotate --pooler-lookup`: the cluster's pooler lookup login gets a new password, under the
/// apply lock (a concurrent apply's pooler sync would otherwise race the auth file).
fn rotate_pooler_lookup(context: &Context, format: Format) -> Result<u8> {
    let cluster = context.cluster_name();
    let Some(pooler) = crate::commands::cluster::pooler_of(context)? else {
        bail!("cluster `{cluster}` has no pooler, so it has no lookup login to rotate");
    };
    let store = context.store()?;
    let connected = context.connect()?;
    let (login, path) = runtime()?.block_on(async {
        let _lock = ApplyLock::acquire(&connected.connector).await?;
        pooler
            .rotate_lookup(&connected.connector, store.as_ref())
            .await
            .with_context(|| format!("rotating the pooler lookup login of cluster `{cluster}`"))
    })?;
    match format {
        Format::Json => print_json(&json!({
            "pooler_lookup": { "cluster": cluster, "username": login, "store_path": path.to_string() }
        }))?,
        Format::Text => outln!(
            "rotated the pooler lookup login `{login}` of cluster `{cluster}`: new password in {path}"
        ),
    }
    Ok(EXIT_OK)
}
