//! Everything the binary prints. Results go to stdout (text or JSON); diagnostics, progress and
//! errors go to stderr, so `--format json` output is always machine-readable.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use pgtenant_engine::check::CheckReport;
use pgtenant_engine::plan::{Notice, NoticeKind};
use pgtenant_engine::{ApplyOutcome, Operation, Plan, TenantOutcome};
use pgtenant_spec::{Diagnostic, LoadedRepo};
use serde::Serialize;
use serde_json::json;

/// `println!` for results: a closed stdout (`pgtenant status | head -2`) ends the program quietly
/// with exit 0, as ripgrep does, instead of panicking.
macro_rules! outln {
    () => {
        $crate::render::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::render::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// `print!` for results, with [`outln!`]'s handling of a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::render::write_stdout(format_args!($($arg)*))
    };
}
pub(crate) use out;

pub fn write_stdout(args: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(crate::EXIT_OK));
        }
        eprintln!("error: writing the results to stdout: {error}");
        std::process::exit(i32::from(crate::EXIT_ERROR));
    }
}

/// Output format of commands that print results.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// cargo's style: the error, then each cause on its own line.
pub fn error(error: &anyhow::Error) {
    eprintln!("error: {error}");
    // Errors that show their source in their own text keep it as `source()` too: each text once.
    let mut shown = error.to_string();
    let causes: Vec<String> = error
        .chain()
        .skip(1)
        .map(|cause| cause.to_string())
        .filter(|text| {
            let new = !shown.contains(text.as_str());
            shown.push_str(text);
            new
        })
        .collect();
    if !causes.is_empty() {
        eprintln!("\nCaused by:");
        for cause in causes {
            for (i, line) in cause.lines().enumerate() {
                eprintln!("{}{line}", if i == 0 { "  " } else { "    " });
            }
        }
    }
}

/// Spec problems go to stderr in every format; JSON output also carries them. Once per process:
/// a command that reads the repo twice (a restore re-applying grants) does not repeat them.
pub fn diagnostics(repo: &LoadedRepo) {
    static SHOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut shown = SHOWN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let new: Vec<String> = repo
        .diagnostics
        .iter()
        .map(|diagnostic| diagnostic.to_string())
        .filter(|text| !shown.contains(text))
        .collect();
    if new.is_empty() {
        return;
    }
    for text in new {
        eprintln!("{text}");
        shown.push(text);
    }
    if repo.has_errors() {
        eprintln!(
            "{} problem(s) in {} file(s): those files' databases are left exactly as they are until fixed; \
             other tenants are reconciled.",
            repo.errors().count(),
            repo.failed_files.len()
        );
    }
}

/// One operation as users and scripts see it: the statement, not the executor's internals.
#[derive(Serialize)]
struct OperationView<'a> {
    tenant: &'a str,
    phase: &'static str,
    database: Option<&'a str>,
    run_as: Option<&'a str>,
    statement: String,
    why: &'a str,
    destructive: bool,
}

impl<'a> From<&'a Operation> for OperationView<'a> {
    fn from(op: &'a Operation) -> Self {
        OperationView {
            tenant: &op.tenant,
            phase: op.phase.as_str(),
            database: op.database.as_ref().map(|d| d.as_str()),
            run_as: op.run_as.as_ref().map(|r| r.as_str()),
            statement: op.display(),
            why: &op.why,
            destructive: op.destructive,
        }
    }
}

fn diagnostics_json(diagnostics: &[Diagnostic]) -> serde_json::Value {
    serde_json::to_value(diagnostics).expect("diagnostics serialize")
}

pub fn print_json(value: &impl Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn plan(plan: &Plan, repo: &LoadedRepo, format: Format) -> Result<()> {
    if format == Format::Json {
        let operations: Vec<OperationView> =
            plan.operations.iter().map(OperationView::from).collect();
        return print_json(&json!({
            "converged": plan.is_converged(),
            "operations": operations,
            "notices": plan.notices,
            "diagnostics": diagnostics_json(&repo.diagnostics),
            "summary": summary(plan),
        }));
    }
    for (tenant, ops) in plan.by_tenant() {
        outln!("{tenant}");
        for op in ops {
            let mark = if op.destructive { "-" } else { "+" };
            let place = op
                .database
                .as_ref()
                .map_or(String::new(), |d| format!(" in {d}"));
            outln!("  {mark} [{}{place}] {}", op.phase.as_str(), op.display());
            outln!("        -- {}", op.why);
        }
    }
    notices(&plan.notices);
    let summary = summary(plan);
    if plan.is_converged() {
        in_sync_line(repo);
    } else {
        outln!(
            "Plan: {} operation(s) for {} tenant(s), {} destructive.",
            summary["operations"],
            summary["tenants"],
            summary["destructive"]
        );
    }
    held_line(plan);
    Ok(())
}

/// Nothing to do — but with a broken file that is not "in sync": its tenants were not compared.
fn in_sync_line(repo: &LoadedRepo) {
    if repo.has_errors() {
        outln!(
            "Nothing to do for the files that parse ({} tenant(s)); {} file(s) with errors were not \
             reconciled (fix them: until then their databases are left as they are and nothing is dropped).",
            repo.databases.len(),
            repo.failed_files.len()
        );
    } else {
        outln!(
            "In sync: nothing to do ({} tenant(s) declared).",
            repo.databases.len()
        );
    }
}

/// The last line whenever a guard held drops back: such a run has not converged (exit 2 for
/// `plan`, 1 for `apply`), and a script reading the tail sees why.
fn held_line(plan: &Plan) {
    let held: Vec<String> = plan
        .held()
        .map(|n| match &n.database {
            Some(database) => format!("{} ({database})", n.tenant),
            None => n.tenant.clone(),
        })
        .collect();
    if !held.is_empty() {
        outln!(
            "{} drop(s) held: {} (see `held:` above for why)",
            held.len(),
            held.join(", ")
        );
    }
}

/// A plan's operations as the JSON of `plan` shows them (for the fleet's per-cluster plans).
pub fn operations_json(plan: &Plan) -> serde_json::Value {
    let operations: Vec<OperationView> = plan.operations.iter().map(OperationView::from).collect();
    json!(operations)
}

/// The `diagnostics` of `plan`/`apply` JSON.
pub fn repo_diagnostics_json(repo: &LoadedRepo) -> serde_json::Value {
    diagnostics_json(&repo.diagnostics)
}

pub fn summary(plan: &Plan) -> serde_json::Value {
    let count = |kind| plan.notices.iter().filter(|n| n.kind == kind).count();
    json!({
        "operations": plan.operations.len(),
        "tenants": plan.by_tenant().len(),
        "destructive": plan.destructive_count(),
        "retained": count(NoticeKind::Retained),
        "held": count(NoticeKind::Held),
        "deferred": count(NoticeKind::Deferred),
        "blocked": count(NoticeKind::Blocked),
    })
}

fn notices(notices: &[Notice]) {
    for notice in notices {
        let kind = match notice.kind {
            NoticeKind::Retained => "retained",
            NoticeKind::Held => "held",
            NoticeKind::Deferred => "deferred",
            NoticeKind::Blocked => "blocked",
        };
        let database = notice
            .database
            .as_deref()
            .map_or(String::new(), |d| format!(" ({d})"));
        outln!("{kind}: {}{database}: {}", notice.tenant, notice.reason);
    }
}

/// What `apply` did, with the failovers of an HA cluster it survived (JSON `failovers`, one text
/// line each).
pub fn apply_survived(
    plan: &Plan,
    outcome: &ApplyOutcome,
    failovers: &[pgtenant_engine::failover::Failover],
    repo: &LoadedRepo,
    format: Format,
) -> Result<()> {
    let failed = outcome.failed().count();
    if format == Format::Json {
        let operations: Vec<OperationView> =
            plan.operations.iter().map(OperationView::from).collect();
        return print_json(&json!({
            "ok": failed == 0 && !repo.has_errors() && !plan.has_unresolved(),
            "applied": outcome.applied(),
            "failed": failed,
            "tenants": outcome.tenants,
            "operations": operations,
            "notices": plan.notices,
            "diagnostics": diagnostics_json(&repo.diagnostics),
            "failovers": failovers,
        }));
    }
    for failover in failovers {
        outln!(
            "failover: the primary moved from {} to {} at {} (waited {} ms); planned again from the catalog",
            failover.from,
            failover.to,
            failover.at,
            failover.waited_ms
        );
    }
    for tenant in &outcome.tenants {
        match &tenant.error {
            None => outln!("ok      {}: {} operation(s)", tenant.tenant, tenant.applied),
            Some(error) => {
                outln!(
                    "FAILED  {}: {} of {} operation(s) applied",
                    tenant.tenant,
                    tenant.applied,
                    tenant.planned
                );
                for line in error.to_string().lines() {
                    outln!("        {line}");
                }
            }
        }
    }
    notices(&plan.notices);
    if plan.is_converged() {
        in_sync_line(repo);
    } else {
        outln!(
            "Applied {} operation(s) to {} tenant(s); {failed} tenant(s) failed.",
            outcome.applied(),
            outcome.tenants.len()
        );
    }
    held_line(plan);
    Ok(())
}

/// How a long apply shows it is alive: a bar on a terminal, one stderr line per finished tenant
/// otherwise (so a 1,000-tenant apply in CI is never silent), nothing with `--format json`.
pub struct ApplyProgress {
    bar: Option<ProgressBar>,
    lines: bool,
}

impl ApplyProgress {
    /// `format`: None for a run inside another command (a restore), which shows its own progress.
    pub fn new(plan: &Plan, format: Option<Format>) -> Self {
        let tenants = plan.by_tenant().len() as u64;
        let terminal = std::io::stderr().is_terminal();
        let text = format == Some(Format::Text);
        let bar = (text && terminal && tenants > 0).then(|| {
            let bar = ProgressBar::new(tenants);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} applying [{bar:30}] {pos}/{len} tenants {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        ApplyProgress {
            bar,
            lines: text && !terminal,
        }
    }

    pub fn callback(&self) -> Arc<dyn Fn(&TenantOutcome) + Send + Sync> {
        let bar = self.bar.clone();
        let lines = self.lines;
        Arc::new(move |outcome: &TenantOutcome| {
            if let Some(bar) = &bar {
                bar.set_message(outcome.tenant.clone());
                bar.inc(1);
            } else if lines {
                let result = match outcome.error {
                    None => "done",
                    Some(_) => "FAILED",
                };
                eprintln!(
                    "{result}: {} ({} of {} operation(s))",
                    outcome.tenant, outcome.applied, outcome.planned
                );
            }
        })
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub fn check(report: &CheckReport, repo: &LoadedRepo, format: Format) -> Result<()> {
    if format == Format::Json {
        return print_json(&json!({
            "in_sync": report.in_sync,
            "tenants": report.tenants,
            "notices": report.notices,
            "diagnostics": diagnostics_json(&repo.diagnostics),
        }));
    }
    for tenant in &report.tenants {
        let trusted = match (tenant.verified, tenant.verified_age) {
            (Some("trusted"), Some(age)) => format!(" (trusted, verified {} ago)", ago(age)),
            _ => String::new(),
        };
        outln!(
            "{:8} {} ({}){trusted}",
            tenant.status,
            tenant.tenant,
            tenant.database
        );
        for item in &tenant.drift {
            outln!("         [{}] {}", item.phase, item.what);
            outln!("           fix: {}", item.fix);
        }
    }
    notices(&report.notices);
    if repo.has_errors() {
        outln!(
            "{} file(s) with errors were not checked (fix them: until then their databases are left as they are).",
            repo.failed_files.len()
        );
    } else if report.in_sync {
        outln!("In sync.");
    } else {
        outln!("Drift found: `pgtenant apply` repairs it.");
    }
    Ok(())
}

/// `42 s`, `3 min`, `2 h`: how long ago, roughly.
fn ago(age: std::time::Duration) -> String {
    match age.as_secs() {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}
