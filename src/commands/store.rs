//! `store verify`: decrypt every stored secret and report the ones that fail.

use crate::render::outln;
use anyhow::{Context as _, Result};
use pgtenant_secrets::StoreError;
use serde_json::json;

use crate::context::Context;
use crate::render::{print_json, Format};
use crate::{EXIT_ERROR, EXIT_OK};

#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Decrypt every secret; list those that are tampered with, corrupt or under another key.
    /// Exit 0 all good, 1 any bad (or the store cannot be opened).
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(context: &Context, command: &StoreCommand) -> Result<u8> {
    match command {
        StoreCommand::Verify(args) => verify(context, args),
    }
}

fn verify(context: &Context, args: &VerifyArgs) -> Result<u8> {
    let store = context.file_store()?;
    let checked = store
        .list_blocking()
        .context("listing the credential store")?
        .len();
    let failures = store.verify().context("verifying the credential store")?;
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
    if all_fail {
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

fn problem(error: &StoreError) -> &'static str {
    match error {
        StoreError::WrongKeyOrTampered { .. } => "wrong-key-or-tampered",
        StoreError::Corrupt { .. } => "corrupt",
        _ => "unreadable",
    }
}
