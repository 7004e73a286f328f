//! Everything the binary prints. Results go to stdout (text or JSON); diagnostics, progress and
//! errors go to stderr, so `--format json` output is always machine-readable.

use std::sync::Arc;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use pgtenant_engine::check::CheckReport;
use pgtenant_engine::plan::{Notice, NoticeKind};
use pgtenant_engine::{ApplyOutcome, Operation, Plan, TenantOutcome};
use pgtenant_spec::{Diagnostic, LoadedRepo};
use serde::Serialize;
use serde_json::json;

/// Output format of commands that print results.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// cargo's style: the error, then each cause on its own line.
pub fn error(error: &anyhow::Error) {
    eprintln!("error: {error}");
    let mut causes = error.chain().skip(1).peekable();
    if causes.peek().is_some() {
        eprintln!("\nCaused by:");
        for cause in causes {
            for (i, line) in cause.to_string().lines().enumerate() {
                eprintln!("{}{line}", if i == 0 { "  " } else { "    " });
            }
        }
    }
}

/// Spec problems go to stderr in every format; JSON output also carries them.
pub fn diagnostics(repo: &LoadedRepo) {
    for diagnostic in &repo.diagnostics {
        eprintln!("{diagnostic}");
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
    println!("{}", serde_json::to_string_pretty(value)?);
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
        println!("{tenant}");
        for op in ops {
            let mark = if op.destructive { "-" } else { "+" };
            let place = op
                .database
                .as_ref()
                .map_or(String::new(), |d| format!(" in {d}"));
            println!("  {mark} [{}{place}] {}", op.phase.as_str(), op.display());
            println!("        -- {}", op.why);
        }
    }
    notices(&plan.notices);
    let summary = summary(plan);
    if plan.is_converged() {
        println!(
            "In sync: nothing to do ({} tenant(s) declared).",
            repo.databases.len()
        );
    } else {
        println!(
            "Plan: {} operation(s) for {} tenant(s), {} destructive.",
            summary["operations"], summary["tenants"], summary["destructive"]
        );
    }
    Ok(())
}

fn summary(plan: &Plan) -> serde_json::Value {
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
        println!("{kind}: {}{database}: {}", notice.tenant, notice.reason);
    }
}

pub fn apply(plan: &Plan, outcome: &ApplyOutcome, repo: &LoadedRepo, format: Format) -> Result<()> {
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
        }));
    }
    for tenant in &outcome.tenants {
        match &tenant.error {
            None => println!("ok      {}: {} operation(s)", tenant.tenant, tenant.applied),
            Some(error) => {
                println!(
                    "FAILED  {}: {} of {} operation(s) applied",
                    tenant.tenant, tenant.applied, tenant.planned
                );
                for line in error.to_string().lines() {
                    println!("        {line}");
                }
            }
        }
    }
    notices(&plan.notices);
    if plan.is_converged() {
        println!(
            "In sync: nothing to do ({} tenant(s) declared).",
            repo.databases.len()
        );
    } else {
        println!(
            "Applied {} operation(s) to {} tenant(s); {failed} tenant(s) failed.",
            outcome.applied(),
            outcome.tenants.len()
        );
    }
    Ok(())
}

/// A progress bar over tenants, on a terminal only.
pub struct ApplyProgress {
    bar: Option<ProgressBar>,
}

impl ApplyProgress {
    pub fn new(plan: &Plan, visible: bool) -> Self {
        let tenants = plan.by_tenant().len() as u64;
        let bar = (visible && tenants > 0).then(|| {
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
        ApplyProgress { bar }
    }

    pub fn callback(&self) -> Arc<dyn Fn(&TenantOutcome) + Send + Sync> {
        let bar = self.bar.clone();
        Arc::new(move |outcome: &TenantOutcome| {
            if let Some(bar) = &bar {
                bar.set_message(outcome.tenant.clone());
                bar.inc(1);
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
        println!(
            "{:8} {} ({})",
            tenant.status, tenant.tenant, tenant.database
        );
        for item in &tenant.drift {
            println!("         [{}] {}", item.phase, item.what);
            println!("           fix: {}", item.fix);
        }
    }
    notices(&report.notices);
    println!(
        "{}",
        if report.in_sync {
            "In sync."
        } else {
            "Drift found: `pgtenant apply` repairs it."
        }
    );
    Ok(())
}
