//! `store verify`: read every stored secret and report the ones that fail; `store copy`: copy every
//! credential into another store, unchanged, and log in with each copy.

use crate::commands::reconcile::runtime;
use crate::render::outln;
use anyhow::{bail, Context as _, Result};
use pgtenant_config::StoreKind;
use pgtenant_secrets::{CredentialStore, SecretPath, StoreError, PENDING_PREFIX};
use serde_json::json;

use crate::context::Context;
use crate::render::{print_json, Format};
use crate::{EXIT_ERROR, EXIT_OK};

#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Read every secret of the configured store; list those that are tampered with, corrupt or
    /// under another key. Exit 0 all good, 1 any bad (or the store cannot be opened).
    Verify(VerifyArgs),
    /// Copy every credential into another store (no password changes), then log in with each
    /// copy. Exit 0 all copied and verified, 1 otherwise.
    Copy(CopyArgs),
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(clap::Args)]
pub struct CopyArgs {
    /// The store to copy into: `file` (the state directory's, `--store-key-file`) or
    /// `aws-secrets-manager` (as the config's `store:` says).
    #[arg(long, value_enum)]
    pub to: StoreArg,
    /// The store to copy from [default: the other one].
    #[arg(long, value_enum)]
    pub from: Option<StoreArg>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreArg {
    File,
    AwsSecretsManager,
}

impl From<StoreArg> for StoreKind {
    fn from(arg: StoreArg) -> Self {
        match arg {
            StoreArg::File => StoreKind::File,
            StoreArg::AwsSecretsManager => StoreKind::AwsSecretsManager,
        }
    }
}

pub fn run(context: &Context, command: &StoreCommand) -> Result<u8> {
    match command {
        StoreCommand::Verify(args) => verify(context, args),
        StoreCommand::Copy(args) => copy(context, args),
    }
}

fn verify(context: &Context, args: &VerifyArgs) -> Result<u8> {
    let (checked, failures) = match context.store_kind() {
        StoreKind::File => {
            let store = context.file_store()?;
            let checked = store
                .list_blocking()
                .context("listing the credential store")?
                .len();
            let failures = store.verify().context("verifying the credential store")?;
            (checked, failures)
        }
        StoreKind::AwsSecretsManager => runtime()?
            .block_on(read_all(context.store()?.as_ref()))
            .context("verifying the credential store")?,
    };
    let all_fail = checked > 0 && failures.len() == checked;
    if args.format == Format::Json {
        let failed: Vec<_> = failures
            .iter()
            .map(|(path, error)| {
                json!({
                    "path": path.as_str(),
                    "problem": problem(error),
                    "message": error.to_string(),
                })
            })
            .collect();
        print_json(&json!({
            "ok": failures.is_empty(),
            "checked": checked,
            "failed": failed,
        }))?;
    } else {
        for (path, error) in &failures {
            outln!("FAIL  {path}: {}", problem(error));
            outln!("      {error}");
        }
        if failures.is_empty() {
            outln!("{checked} secret(s) checked: all decrypt and are intact.");
        } else {
            outln!(
                "{checked} secret(s) checked, {} failed: nothing was changed; `pgtenant apply` \
                 stops rather than replace a secret it cannot read.",
                failures.len()
            );
        }
    }
    if all_fail && context.store_kind() == StoreKind::File {
        eprintln!(
            "every secret fails to decrypt: the configured key file (--store-key-file, \
             PGTENANT_STORE_KEY_FILE, default <state-dir>/keys/store.key) is most likely not the \
             key they were written with; restore the right key from its backup"
        );
    }
    Ok(if failures.is_empty() {
        EXIT_OK
    } else {
        EXIT_ERROR
    })
}

/// Reads every secret of `store` one by one: how many, and those that fail as unreadable. An
/// error reaching the store at all is returned.
async fn read_all(
    store: &dyn CredentialStore,
) -> Result<(usize, Vec<(SecretPath, StoreError)>), StoreError> {
    let paths = store.list().await?;
    let mut failures = Vec::new();
    for path in &paths {
        match store.get(path).await {
            Ok(_) => {}
            Err(e @ (StoreError::WrongKeyOrTampered { .. } | StoreError::Corrupt { .. })) => {
                failures.push((path.clone(), e))
            }
            Err(e) => return Err(e),
        }
    }
    Ok((paths.len(), failures))
}

fn problem(error: &StoreError) -> &'static str {
    match error {
        StoreError::WrongKeyOrTampered { .. } => "wrong-key-or-tampered",
        StoreError::Corrupt { .. } => "corrupt",
        _ => "unreadable",
    }
}

fn copy(context: &Context, args: &CopyArgs) -> Result<u8> {
    let to = StoreKind::from(args.to);
    let from = match args.from.map(StoreKind::from) {
        Some(from) if from == to => bail!("--from and --to name the same store, {}", to.as_str()),
        Some(from) => from,
        None => match to {
            StoreKind::File => StoreKind::AwsSecretsManager,
            StoreKind::AwsSecretsManager => StoreKind::File,
        },
    };
    let source = context.store_of(from)?;
    let target = context.store_of(to)?;
    let runtime = runtime()?;
    let paths = runtime
        .block_on(source.list())
        .with_context(|| format!("listing the {} store", from.as_str()))?;
    let pending: Vec<&SecretPath> = paths
        .iter()
        .filter(|p| p.as_str().starts_with(PENDING_PREFIX))
        .collect();
    if !pending.is_empty() {
        bail!(
            "the {} store holds {} interrupted password change(s) ({}): run `pgtenant apply` to \
             settle them, then copy",
            from.as_str(),
            pending.len(),
            pending
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let credentials = runtime
        .block_on(source.get_many(&paths))
        .with_context(|| format!("reading the {} store", from.as_str()))?;
    let existing = runtime
        .block_on(target.get_many(&paths))
        .with_context(|| format!("reading the {} store", to.as_str()))?;
    let connected = context.connect()?;
    let (mut copied, mut unchanged) = (0usize, 0usize);
    let mut failed = Vec::new();
    for (path, credential) in &credentials {
        if existing.get(path) == Some(credential) {
            unchanged += 1;
        } else {
            runtime
                .block_on(target.put(path, credential))
                .with_context(|| format!("writing {path} to the {} store", to.as_str()))?;
            copied += 1;
        }
        // Read back from the target, and log in with what it holds.
        let written = runtime
            .block_on(target.get(path))
            .with_context(|| format!("reading {path} back from the {} store", to.as_str()))?;
        let login = match written {
            Some(written) if written == *credential => runtime
                .block_on(
                    connected
                        .connector
                        .with_login(&written.username, &written.password)
                        .connect(Some(&written.dbname)),
                )
                .map(drop)
                .map_err(|e| pgtenant_engine::error_chain(&e)),
            _ => Err("the copy does not read back as written".to_owned()),
        };
        if let Err(why) = login {
            failed.push((path.clone(), why));
        }
    }
    let verified = credentials.len() - failed.len();
    if args.format == Format::Json {
        print_json(&json!({
            "from": from.as_str(),
            "to": to.as_str(),
            "copied": copied,
            "unchanged": unchanged,
            "verified": verified,
            "failed": failed
                .iter()
                .map(|(path, why)| json!({"path": path.as_str(), "message": why}))
                .collect::<Vec<_>>(),
        }))?;
    } else {
        for (path, why) in &failed {
            outln!("FAIL  {path}: {why}");
        }
        outln!(
            "{} credential(s) from the {} store: {copied} copied into the {} store, {unchanged} \
             already there; {verified} logged in with the copy.",
            credentials.len(),
            from.as_str(),
            to.as_str()
        );
    }
    Ok(if failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_ERROR
    })
}
