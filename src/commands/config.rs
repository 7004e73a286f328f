//! `config check` and `config schema`: the platform config (pgtenant.yaml), no cluster involved.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use pgtenant_config::{ClusterConfig, Config, Diagnostic, SourceLocation};
use pgtenant_engine::Connector;
use serde::Serialize;

use crate::context::{ConfigPath, Context};
use crate::render::{self, out, outln, Format};
use crate::{Cli, EXIT_ERROR, EXIT_OK};

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file and resolve its references (variables set? files readable?);
    /// say what each cluster resolves to, without secrets. Exit 0 valid, 1 with errors.
    Check(CheckArgs),
    /// Print the JSON Schema of pgtenant.yaml, for editors (yaml-language-server).
    Schema,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(cli: &Cli, command: &ConfigCommand) -> Result<u8> {
    match command {
        ConfigCommand::Check(args) => check(cli, args.format),
        ConfigCommand::Schema => {
            out!("{}", pgtenant_config::config_schema_text());
            Ok(EXIT_OK)
        }
    }
}

/// What `config check` found, as `--format json` prints it.
#[derive(Serialize)]
struct Report {
    /// The config file, or where it was looked for.
    file: PathBuf,
    found: bool,
    valid: bool,
    diagnostics: Vec<Diagnostic>,
    repo: Option<PathBuf>,
    /// The repo commands read without a REPO argument: PGTENANT_REPO is not seen here.
    effective_repo: Option<PathBuf>,
    clusters: Vec<ClusterView>,
    store: Option<StoreView>,
    /// The cluster commands use with these flags and variables; None when none can be used.
    selected: Option<String>,
    /// Why none can be used (several and no --cluster, an unresolved admin URL, a wrong name).
    selection_error: Option<String>,
}

#[derive(Serialize)]
struct ClusterView {
    name: String,
    /// `env:VAR`, `file:/path` or `inline`.
    admin_url_from: String,
    resolved: bool,
    /// Of the resolved admin URL; never its password.
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    endpoint: Option<String>,
    ca_file: Option<PathBuf>,
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct StoreView {
    r#type: &'static str,
    key_file: Option<PathBuf>,
    /// AWS Secrets Manager: as configured (None: the SDK's region, `customer/`, the region's
    /// endpoint, the account's KMS key).
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_key_id: Option<String>,
}

impl StoreView {
    fn of(store: &pgtenant_config::StoreConfig) -> Self {
        StoreView {
            r#type: store.kind.as_str(),
            key_file: store.key_file.clone(),
            region: store.region.clone(),
            prefix: store.prefix.clone(),
            endpoint_url: store.endpoint_url.clone(),
            kms_key_id: store.kms_key_id.clone(),
        }
    }

    /// The `store:` line of `config check`.
    fn line(&self) -> String {
        let details: Vec<String> = [
            (
                "key",
                self.key_file.as_ref().map(|k| k.display().to_string()),
            ),
            ("region", self.region.clone()),
            ("prefix", self.prefix.clone()),
            ("endpoint", self.endpoint_url.clone()),
            ("KMS key", self.kms_key_id.clone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some(format!("{name} {}", value?)))
        .collect();
        match details.is_empty() {
            true => format!("store: {}", self.r#type),
            false => format!("store: {} ({})", self.r#type, details.join(", ")),
        }
    }
}

fn check(cli: &Cli, format: Format) -> Result<u8> {
    let path = ConfigPath::of(cli)?;
    let Some(file) = path.file() else {
        let ConfigPath::Absent(looked) = &path else {
            unreachable!("only an absent config has no file")
        };
        return absent(looked, format);
    };
    let loaded = pgtenant_config::load(file);
    let mut diagnostics = loaded.diagnostics;
    let mut report = Report {
        file: file.to_path_buf(),
        found: true,
        valid: false,
        diagnostics: Vec::new(),
        repo: None,
        effective_repo: None,
        clusters: Vec::new(),
        store: None,
        selected: None,
        selection_error: None,
    };
    if let Some(config) = &loaded.config {
        resolve(file, config, &mut report, &mut diagnostics);
        // What commands use with these flags and variables, which win over the file.
        match Context::with_config(cli, Some((file.to_path_buf(), config.clone()))) {
            Ok(context) => {
                report.effective_repo = Some(context.repo(None));
                match context.unusable() {
                    Some(why) => report.selection_error = Some(why.to_owned()),
                    None => report.selected = Some(context.cluster_name().to_owned()),
                }
            }
            Err(error) => report.selection_error = Some(format!("{error:#}")),
        }
    }
    diagnostics.sort_by(|a, b| a.location.cmp(&b.location));
    report.valid = loaded.config.is_some() && !diagnostics.iter().any(Diagnostic::is_error);
    report.diagnostics = diagnostics;
    let code = if report.valid { EXIT_OK } else { EXIT_ERROR };
    for diagnostic in &report.diagnostics {
        eprintln!("{diagnostic}");
    }
    if format == Format::Json {
        render::print_json(&report)?;
        return Ok(code);
    }
    print_text(&report);
    Ok(code)
}

fn absent(looked: &Path, format: Format) -> Result<u8> {
    if format == Format::Json {
        render::print_json(&Report {
            file: looked.to_path_buf(),
            found: false,
            valid: true,
            diagnostics: Vec::new(),
            repo: None,
            effective_repo: None,
            clusters: Vec::new(),
            store: None,
            selected: Some(pgtenant_config::DEFAULT_CLUSTER.to_owned()),
            selection_error: None,
        })?;
    } else {
        outln!(
            "no config file: {} does not exist; pgtenant uses the flags and variables only \
             (one cluster, `{}`)",
            looked.display(),
            pgtenant_config::DEFAULT_CLUSTER
        );
    }
    Ok(EXIT_OK)
}

/// What the references of a valid config resolve to; what does not resolve is an error.
fn resolve(file: &Path, config: &Config, report: &mut Report, diagnostics: &mut Vec<Diagnostic>) {
    let at_start = || SourceLocation::file_start(file);
    if let Some(repo) = &config.repo {
        if !repo.is_dir() {
            diagnostics.push(
                Diagnostic::error(
                    at_start(),
                    "repo",
                    format!("the apps repo {} is not a directory", repo.display()),
                )
                .with_hint("clone the apps repo there, or correct `repo:`"),
            );
        }
        report.repo = Some(repo.clone());
    }
    for (index, cluster) in config.clusters.iter().enumerate() {
        report
            .clusters
            .push(cluster_view(index, cluster, diagnostics));
    }
    report.store = Some(StoreView::of(&config.store));
}

fn cluster_view(
    index: usize,
    cluster: &ClusterConfig,
    diagnostics: &mut Vec<Diagnostic>,
) -> ClusterView {
    let field = format!("clusters[{index}].adminUrl");
    let mut view = ClusterView {
        name: cluster.name.clone(),
        admin_url_from: cluster.admin_url.describe(),
        resolved: false,
        host: None,
        port: None,
        user: None,
        endpoint: cluster.endpoint.as_ref().map(ToString::to_string),
        ca_file: cluster.ca_file.clone(),
        labels: cluster.labels.clone(),
    };
    let location = || cluster.admin_url_location.clone();
    match cluster.admin_url.resolve() {
        Ok(resolved) => {
            for warning in resolved.warnings {
                diagnostics.push(Diagnostic::warning(location(), &field, warning));
            }
            match Connector::from_url(&resolved.url) {
                Ok(connector) => {
                    let (host, port) = connector.endpoint();
                    view.resolved = true;
                    view.host = Some(host);
                    view.port = Some(port);
                    view.user = connector.user().map(str::to_owned);
                }
                Err(error) => diagnostics.push(
                    Diagnostic::error(
                        location(),
                        &field,
                        format!(
                            "the admin URL from {} is not a libpq URL: {error}",
                            cluster.admin_url.describe()
                        ),
                    )
                    .with_hint(
                        "e.g. postgres://pgtenant@db.internal:5432/postgres?sslmode=verify-full",
                    ),
                ),
            }
        }
        Err(error) => diagnostics.push(
            Diagnostic::error(location(), &field, error.to_string()).with_hint(
                match &cluster.admin_url {
                    pgtenant_config::AdminUrlSource::Env(var) => {
                        format!("export {var}=postgres://… where pgtenant runs")
                    }
                    _ => "write the admin URL into that file (mode 0600)".to_owned(),
                },
            ),
        ),
    }
    if let Some(ca_file) = &cluster.ca_file {
        if let Err(error) = std::fs::File::open(ca_file).and_then(|f| f.metadata()) {
            diagnostics.push(
                Diagnostic::error(
                    cluster.location.clone(),
                    format!("clusters[{index}].caFile"),
                    format!("cannot read the CA file {}: {error}", ca_file.display()),
                )
                .with_hint("give the path of a PEM bundle that pgtenant can read"),
            );
        }
    }
    view
}

fn print_text(report: &Report) {
    outln!("config: {}", report.file.display());
    if let Some(repo) = &report.repo {
        outln!("repo: {}", repo.display());
    }
    for cluster in &report.clusters {
        let target = match (&cluster.host, cluster.port) {
            (Some(host), Some(port)) => {
                let user = cluster
                    .user
                    .as_deref()
                    .map_or(String::new(), |u| format!("{u}@"));
                format!("{user}{host}:{port}")
            }
            _ => "unresolved".to_owned(),
        };
        let mut line = format!(
            "cluster {}: admin URL from {} → {target}",
            cluster.name, cluster.admin_url_from
        );
        let endpoint = cluster.endpoint.clone().or_else(|| {
            cluster
                .host
                .as_ref()
                .zip(cluster.port)
                .map(|(h, p)| format!("{h}:{p} (the admin URL's)"))
        });
        if let Some(endpoint) = endpoint {
            line.push_str(&format!("; endpoint {endpoint}"));
        }
        if let Some(ca) = &cluster.ca_file {
            line.push_str(&format!("; CA {}", ca.display()));
        }
        if !cluster.labels.is_empty() {
            let labels: Vec<String> = cluster
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            line.push_str(&format!("; labels {}", labels.join(",")));
        }
        outln!("{line}");
    }
    if let Some(store) = &report.store {
        outln!("{}", store.line());
    }
    match (&report.selected, &report.selection_error) {
        (Some(name), _) => outln!("commands manage cluster `{name}`"),
        (None, Some(why)) => outln!("commands need --cluster: {why}"),
        (None, None) => {}
    }
    let errors = report.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = report.diagnostics.len() - errors;
    if report.valid {
        outln!("valid ({warnings} warning(s))");
    } else {
        outln!("invalid: {errors} error(s), {warnings} warning(s)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_check_shows_the_aws_store_settings() {
        let store = pgtenant_config::StoreConfig {
            kind: pgtenant_config::StoreKind::AwsSecretsManager,
            region: Some("eu-west-1".into()),
            prefix: Some("team/".into()),
            endpoint_url: Some("http://127.0.0.1:5000".into()),
            ..Default::default()
        };
        let view = StoreView::of(&store);
        assert_eq!(
            view.line(),
            "store: aws-secrets-manager (region eu-west-1, prefix team/, endpoint http://127.0.0.1:5000)"
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["region"], "eu-west-1");
        assert_eq!(json["prefix"], "team/");
        assert_eq!(json["endpoint_url"], "http://127.0.0.1:5000");
        assert!(json.get("kms_key_id").is_none());
        // The file store's line is as before.
        let file = StoreView::of(&pgtenant_config::StoreConfig::default());
        assert_eq!(file.line(), "store: file");
    }
}
