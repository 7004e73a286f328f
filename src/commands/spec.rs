//! `spec upgrade` and `spec schema`: the apps repo's files themselves, no cluster involved.

use crate::render::{out, outln};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use pgtenant_spec::{Change, Diagnostic, Upgrade};
use serde::Serialize;

use crate::render::{self, Format};
use crate::{EXIT_ERROR, EXIT_OK, EXIT_PENDING};

#[derive(clap::Subcommand)]
pub enum SpecCommand {
    /// Rewrite legacy values files to the v1 format in place, changing nothing else. Exit 0 done,
    /// 2 with --check when a file would change, 1 when a file could not be upgraded.
    Upgrade(UpgradeArgs),
    /// Print the JSON Schema of a values file, for editors (yaml-language-server).
    Schema,
}

#[derive(clap::Args)]
pub struct UpgradeArgs {
    /// The apps repo [default: the current directory].
    pub repo: Option<PathBuf>,
    /// Change nothing; exit 2 if a file would change.
    #[arg(long)]
    pub check: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(command: &SpecCommand) -> Result<u8> {
    match command {
        SpecCommand::Upgrade(args) => upgrade(args),
        SpecCommand::Schema => {
            out!("{}", pgtenant_spec::values_file_schema_text());
            Ok(EXIT_OK)
        }
    }
}

/// One values file's outcome, as printed.
#[derive(Serialize)]
struct FileReport {
    file: PathBuf,
    /// `upgraded`, `would-upgrade`, `unchanged` or `failed`.
    status: &'static str,
    /// Why a file is unchanged: `already-v1` or `no-databases`.
    reason: Option<&'static str>,
    changes: Vec<Change>,
    diagnostics: Vec<Diagnostic>,
}

fn upgrade(args: &UpgradeArgs) -> Result<u8> {
    let root = args.repo.as_deref().unwrap_or(Path::new("."));
    let files = pgtenant_spec::find_values_files(root)
        .with_context(|| format!("reading the apps repo {}", root.display()))?;
    let mut reports = Vec::new();
    for relative in files {
        let report = match pgtenant_spec::read_values_file(root, &relative) {
            Err(unreadable) => failed(relative, vec![unreadable]),
            Ok(text) => match pgtenant_spec::upgrade(&relative, &text) {
                Upgrade::Unchanged(reason) => FileReport {
                    file: relative,
                    status: "unchanged",
                    reason: Some(reason.as_str()),
                    changes: Vec::new(),
                    diagnostics: Vec::new(),
                },
                Upgrade::Failed(diagnostics) => failed(relative, diagnostics),
                Upgrade::Upgraded { text, changes } => {
                    if !args.check {
                        let path = root.join(&relative);
                        replace_file(&path, &text)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                    FileReport {
                        file: relative,
                        status: if args.check {
                            "would-upgrade"
                        } else {
                            "upgraded"
                        },
                        reason: None,
                        changes,
                        diagnostics: Vec::new(),
                    }
                }
            },
        };
        reports.push(report);
    }

    let count = |status: &str| reports.iter().filter(|r| r.status == status).count();
    let changed = count("upgraded") + count("would-upgrade");
    let unchanged = count("unchanged");
    let failed_files = count("failed");
    for report in reports.iter().filter(|r| r.status == "failed") {
        for diagnostic in &report.diagnostics {
            eprintln!("{diagnostic}");
        }
    }
    if args.format == Format::Json {
        render::print_json(&serde_json::json!({
            "check": args.check,
            "files": reports,
            "summary": {"changed": changed, "unchanged": unchanged, "failed": failed_files},
        }))?;
    } else {
        for report in reports.iter().filter(|r| !r.changes.is_empty()) {
            outln!(
                "{} {}: {}",
                report.status.replace('-', " "),
                report.file.display(),
                describe(&report.changes)
            );
        }
    }
    let verb = if args.check {
        "would be upgraded"
    } else {
        "upgraded"
    };
    eprintln!(
        "{changed} file(s) {verb}, {unchanged} unchanged (v1 already, or no databases), \
         {failed_files} could not be upgraded."
    );
    if failed_files > 0 {
        eprintln!(
            "Files that could not be upgraded are left untouched: fix the problems above and run \
             `pgtenant spec upgrade` again."
        );
    }
    Ok(if failed_files > 0 {
        EXIT_ERROR
    } else if args.check && changed > 0 {
        EXIT_PENDING
    } else {
        EXIT_OK
    })
}

fn failed(file: PathBuf, diagnostics: Vec<Diagnostic>) -> FileReport {
    FileReport {
        file,
        status: "failed",
        reason: None,
        changes: Vec::new(),
        diagnostics,
    }
}

/// `apiVersion added; line 4: deletionProtection: true → mode: protected`.
fn describe(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|change| {
            if change.before.is_empty() {
                "apiVersion added".to_owned()
            } else {
                format!(
                    "line {}: {} → {}",
                    change.line,
                    change.before.replace(['\n', '\r'], " "),
                    change.after
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Replaces the file's content through a temporary file and a rename, so that an interrupted
/// upgrade leaves the old or the new file, never half of one. Permissions are kept; a symlinked
/// values file has its target rewritten.
fn replace_file(path: &Path, text: &str) -> Result<()> {
    let target = fs::canonicalize(path)?;
    let permissions = fs::metadata(&target)?.permissions();
    let file_name = target
        .file_name()
        .context("the file has no name")?
        .to_string_lossy()
        .into_owned();
    let temporary = target.with_file_name(format!(".{file_name}.pgtenant-upgrade"));
    let result = (|| -> Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::set_permissions(&temporary, permissions)?;
        fs::rename(&temporary, &target)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}
