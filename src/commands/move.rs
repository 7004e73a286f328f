//! `pgtenant move NS/DB --to CLUSTER` and `pgtenant move NS/DB --abort` (docs/fleet.md "Moving a
//! tenant"): an offline copy with pg_dump/pg_restore between two clusters of the fleet, the steps
//! of `pgtenant_engine::relocate` run in order. A failure at any step undoes the steps done so far
//! (newest first): the source stays authoritative.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use pgtenant_engine::reconcile::Reconciler;
use pgtenant_engine::relocate::{self, Step, Undo};
use pgtenant_engine::{desired::Marker, fleet, sql, Desired, DesiredTenant, Ident};
use pgtenant_secrets::{Credential, CredentialStore, SecretPath, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::commands::reconcile::{reconciler, runtime};
use crate::context::Context;
use crate::render::{self, outln, Format};
use crate::{EXIT_ERROR, EXIT_OK, EXIT_PENDING};

#[derive(clap::Args)]
pub struct MoveArgs {
    /// The tenant to move, NAMESPACE/DATABASE.
    pub tenant: String,
    /// The cluster of the fleet to move it to.
    #[arg(long, value_name = "CLUSTER", required_unless_present = "abort")]
    pub to: Option<String>,
    /// Roll back a completed move while the source copy is kept (its tier's retention).
    #[arg(long, conflicts_with = "to")]
    pub abort: bool,
    /// A copy by logical replication with a short cut-over: not supported yet (refused).
    #[arg(long)]
    pub online: bool,
    /// Run the steps; without it they are printed and the command exits 2.
    #[arg(long)]
    pub yes: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The apps repo (else PGTENANT_REPO, else the config's `repo:`).
    #[arg(long, env = "PGTENANT_REPO", hide_env_values = true)]
    pub repo: Option<PathBuf>,
}

/// A move as the local state keeps it: `<state>/fleet/moves.json`, tenant → record. No secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MoveRecord {
    from: String,
    to: String,
    /// `moving`, `moved`, `failed` or `aborted`.
    state: String,
    /// The last step done (or the one that failed).
    step: String,
    started: String,
    /// The source copy is kept, and the move can be aborted, until then.
    until: String,
    /// The source database's marker before the move, put back by a rollback.
    source_marker: String,
    /// The source logins that could log in before the move.
    could_login: Vec<String>,
}

fn moves_path(context: &Context) -> PathBuf {
    context.state_dir().join("fleet").join("moves.json")
}

fn moves(context: &Context) -> BTreeMap<String, MoveRecord> {
    std::fs::read(moves_path(context))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn save_move(context: &Context, tenant: &str, record: &MoveRecord) -> Result<()> {
    let mut all = moves(context);
    all.insert(tenant.to_owned(), record.clone());
    let path = moves_path(context);
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temporary = dir.join(format!(".moves.{}.tmp", std::process::id()));
    pgtenant_backup::write_private_file(&temporary, &serde_json::to_vec_pretty(&all)?)?;
    std::fs::rename(&temporary, &path).with_context(|| format!("writing {}", path.display()))
}

/// One move or abort at a time per state directory, held until it ends. The kernel lets go of it
/// when the process dies however it dies, so a record still `moving` while the lock is free is a
/// move that was interrupted.
fn move_lock(context: &Context) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = moves_path(context).with_file_name("move.lock");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path.parent().expect("a file in a directory"))?;
    pgtenant_backup::try_lock_file(&path)?.with_context(|| {
        format!(
            "another `pgtenant move` is running with this state directory (it holds {}): wait for it to end",
            path.display()
        )
    })
}

/// The store as the target's scoped applies see it before the cut-over: what they write stays in
/// memory (read back by their own re-plan), so the stored endpoint keeps naming the source until
/// [`Step::UpdateCredentials`].
struct Overlay {
    store: Arc<dyn CredentialStore>,
    written: std::sync::Mutex<BTreeMap<SecretPath, Option<Credential>>>,
}

impl Overlay {
    fn written(&self) -> std::sync::MutexGuard<'_, BTreeMap<SecretPath, Option<Credential>>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl CredentialStore for Overlay {
    async fn get(&self, path: &SecretPath) -> Result<Option<Credential>, StoreError> {
        let written = self.written().get(path).cloned();
        match written {
            Some(credential) => Ok(credential),
            None => self.store.get(path).await,
        }
    }
    async fn put(&self, path: &SecretPath, credential: &Credential) -> Result<(), StoreError> {
        self.written()
            .insert(path.clone(), Some(credential.clone()));
        Ok(())
    }
    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        self.written().insert(path.clone(), None);
        Ok(())
    }
    async fn list(&self) -> Result<Vec<SecretPath>, StoreError> {
        let mut paths: std::collections::BTreeSet<SecretPath> =
            self.store.list().await?.into_iter().collect();
        for (path, credential) in self.written().iter() {
            if credential.is_some() {
                paths.insert(path.clone());
            } else {
                paths.remove(path);
            }
        }
        Ok(paths.into_iter().collect())
    }
}

/// The two clusters and the tenant of a move.
struct Move<'c> {
    context: &'c Context,
    tenant: DesiredTenant,
    desired: Desired,
    from: &'c Context,
    to: &'c Context,
    source: Reconciler,
    target: Reconciler,
    /// The target's reconciler before the cut-over, writing its credentials to an [`Overlay`].
    staged: Reconciler,
}

pub fn run(context: &Context, args: &MoveArgs) -> Result<u8> {
    let id = args.tenant.as_str();
    crate::commands::parse_tenant(id)?;
    if args.online {
        bail!(
            "--online (logical replication with a short cut-over) is not supported yet: `pgtenant move` copies \
             offline with pg_dump and pg_restore while the tenant's logins are stopped; run it without --online"
        );
    }
    if context.fleet().is_empty() {
        bail!("`pgtenant move` moves a tenant between clusters of a fleet: the config lists fewer than two clusters (or --admin-url/--cluster chose one)");
    }
    let _lock = move_lock(context)?;
    if args.abort {
        return abort(context, args);
    }
    if let Some(record) = moves(context).get(id).filter(|r| r.state == "moving") {
        bail!(
            "the move of {id} from `{}` to `{}` (started {}, last step done: {}) was interrupted: the process \
             ended before it finished or rolled back. `pgtenant move {id} --abort` rolls it back and `{}` is \
             authoritative again; then move again",
            record.from,
            record.to,
            record.started,
            if record.step.is_empty() { "none" } else { &record.step },
            record.from
        );
    }
    let to = args
        .to
        .as_deref()
        .expect("clap requires --to without --abort");
    let rt = runtime()?;
    let target_context = context
        .fleet()
        .iter()
        .find(|m| m.cluster_name() == to)
        .with_context(|| format!("--to {to}: no such cluster in the config file"))?;
    // Where the tenant lives now: the one cluster whose inventory holds it.
    let mut holders = Vec::new();
    for member in context.fleet() {
        let reconciler =
            reconciler(member).with_context(|| format!("cluster `{}`", member.cluster_name()))?;
        let inventory = rt
            .block_on(fleet::inventory(&reconciler.connector))
            .map_err(|e| anyhow::anyhow!(pgtenant_engine::error_chain(&e)))
            .with_context(|| format!("reading cluster `{}`", member.cluster_name()))?;
        if inventory.tenants.contains(id) {
            holders.push((member, reconciler));
        }
    }
    let (from_context, source) = match holders.len() {
        0 => bail!("{id} is on no cluster of the fleet: apply it first"),
        1 => holders.pop().expect("one"),
        _ => bail!(
            "{id} is on several clusters ({}): settle that first",
            holders
                .iter()
                .map(|(m, _)| m.cluster_name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if from_context.cluster_name() == to {
        bail!("{id} already lives on `{to}`");
    }
    let repo = context.load_repo(args.repo.as_deref(), false)?;
    let Some(spec) = repo.databases.iter().find(|d| d.tenant_id() == id) else {
        bail!("{id} is not declared in the apps repo");
    };
    let tenant = DesiredTenant::from_spec(spec);
    let environment = tenant
        .environment
        .or(context.config().and_then(|c| c.environment))
        .unwrap_or_default();
    let now = pgtenant_backup::Timestamp::now();
    let until = now
        .plus_seconds(i64::from(environment.retention_days()) * 86_400)
        .to_rfc3339();
    let logins: Vec<Ident> = tenant.login_roles().map(|r| r.name.clone()).collect();
    let steps = relocate::plan_move(
        id,
        &tenant.database,
        tenant.owner(),
        &logins,
        from_context.cluster_name(),
        to,
        &until,
    );
    if !args.yes {
        match args.format {
            Format::Json => render::print_json(&json!({
                "tenant": id, "from": from_context.cluster_name(), "to": to,
                "until": until, "steps": steps, "moved": false,
            }))?,
            Format::Text => {
                for (n, s) in steps.iter().enumerate() {
                    outln!("{}. {}: {}", n + 1, s.step.name(), s.what);
                }
                eprintln!("nothing done: run again with --yes to move {id}");
            }
        }
        return Ok(EXIT_PENDING);
    }
    let mut target = reconciler(target_context)?;
    target.trust = pgtenant_engine::verified::Trust::none();
    let mut source = source;
    source.trust = pgtenant_engine::verified::Trust::none();
    let desired = Desired {
        tenants: vec![tenant.clone()],
        drops_held_because: None,
        failed_files: Vec::new(),
    };
    let work = Move {
        context,
        tenant,
        desired,
        from: from_context,
        to: target_context,
        source,
        staged: staged(&target),
        target,
    };
    let mut record = MoveRecord {
        from: from_context.cluster_name().to_owned(),
        to: to.to_owned(),
        state: "moving".into(),
        step: String::new(),
        started: now.to_rfc3339(),
        until: until.clone(),
        source_marker: String::new(),
        could_login: Vec::new(),
    };
    let mut done: Vec<serde_json::Value> = Vec::new();
    let mut failure = None;
    for planned in &steps {
        eprintln!("move {id}: {} ({})", planned.step.name(), planned.what);
        let result = work
            .step(planned.step, &mut record)
            .and_then(|()| injected_failure(planned.step));
        record.step = planned.step.name().to_owned();
        match result {
            Ok(()) => {
                done.push(json!({"step": planned.step, "what": planned.what, "ok": true}));
                save_move(context, id, &record)?;
                injected_pause(planned.step);
            }
            Err(error) => {
                done.push(json!({"step": planned.step, "what": planned.what, "ok": false, "error": format!("{error:#}")}));
                failure = Some((planned.step, error));
                break;
            }
        }
    }
    let ok = failure.is_none();
    let mut rollback = Vec::new();
    if let Some((failed, error)) = &failure {
        eprintln!("move {id}: step {} failed: {error:#}", failed.name());
        for step in Step::ALL.iter().rev().filter(|s| *s <= failed) {
            let Some(undo) = step.undo() else { continue };
            eprintln!("move {id}: rolling back: {undo:?}");
            let undone = work.undo(undo, &record);
            if let Err(e) = &undone {
                eprintln!("move {id}: rolling back {undo:?} failed: {e:#}");
            }
            rollback.push(json!({"undo": undo, "ok": undone.is_ok(), "error": undone.err().map(|e| format!("{e:#}"))}));
        }
        record.state = "failed".into();
        save_move(context, id, &record)?;
    } else {
        record.state = "moved".into();
        save_move(context, id, &record)?;
    }
    match args.format {
        Format::Json => render::print_json(&json!({
            "tenant": id, "from": record.from, "to": record.to, "until": until,
            "moved": ok, "steps": done,
            "failed_step": failure.as_ref().map(|(s, _)| s.name()),
            "error": failure.as_ref().map(|(_, e)| format!("{e:#}")),
            "rollback": rollback,
        }))?,
        Format::Text if ok => outln!(
            "moved {id} from `{}` to `{to}`; the copy on `{}` is kept (protected) until {until}: `pgtenant move {id} --abort` rolls back until then",
            record.from, record.from
        ),
        Format::Text => {}
    }
    if let Some((failed, error)) = failure {
        eprintln!(
            "error: moving {id} failed at step {}: {error:#}; `{}` is still authoritative",
            failed.name(),
            record.from
        );
        return Ok(EXIT_ERROR);
    }
    Ok(EXIT_OK)
}

/// `target` with its credential writes kept in memory until the cut-over.
fn staged(target: &Reconciler) -> Reconciler {
    let mut staged = target.clone();
    staged.store = Arc::new(Overlay {
        store: target.store.clone(),
        written: Default::default(),
    });
    staged
}

/// A failure after `step`, for the tests of the rollback (debug builds only).
fn injected_failure(step: Step) -> Result<()> {
    #[cfg(debug_assertions)]
    if std::env::var("PGTENANT_TEST_MOVE_FAIL_AFTER").is_ok_and(|s| s == step.name()) {
        bail!(
            "injected failure after {} (PGTENANT_TEST_MOVE_FAIL_AFTER)",
            step.name()
        );
    }
    let _ = step;
    Ok(())
}

/// Waits after `step` until the test kills the process (debug builds only): a move interrupted
/// by a crash, for the tests of `--abort`.
fn injected_pause(step: Step) {
    #[cfg(debug_assertions)]
    if std::env::var("PGTENANT_TEST_MOVE_PAUSE_AFTER").is_ok_and(|s| s == step.name()) {
        eprintln!(
            "move: paused after {} (PGTENANT_TEST_MOVE_PAUSE_AFTER)",
            step.name()
        );
        loop {
            std::thread::park();
        }
    }
    let _ = step;
}

impl Move<'_> {
    fn id(&self) -> &str {
        &self.tenant.id
    }

    fn database(&self) -> &str {
        self.tenant.database.as_str()
    }

    /// The tenant as `cluster` declares it.
    fn desired_on(&self, cluster: &str) -> Desired {
        Desired {
            tenants: vec![DesiredTenant {
                cluster: Some(cluster.to_owned()),
                ..self.tenant.clone()
            }],
            ..self.desired.clone()
        }
    }

    /// A scoped apply of the tenant on one side; fails when any of its operations did.
    fn reconcile(&self, reconciler: &Reconciler, cluster: &str) -> Result<()> {
        let desired = self.desired_on(cluster);
        let applied = runtime()?
            .block_on(reconciler.reconcile_tenant(&desired, self.id(), |_| {
                Arc::new(|_: &pgtenant_engine::TenantOutcome| {})
            }))
            .map_err(|e| anyhow::anyhow!(pgtenant_engine::error_chain(&e)))?;
        if let Some(failed) = applied.outcome.failed().next() {
            bail!(
                "apply on `{cluster}`: {}",
                failed
                    .error
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            );
        }
        if applied.plan.has_unresolved() {
            bail!("apply on `{cluster}`: the plan has unresolved problems (`pgtenant plan --cluster {cluster}`)");
        }
        Ok(())
    }

    /// The logins and grace twins of the tenant.
    fn logins(&self) -> Vec<Ident> {
        self.tenant
            .login_roles()
            .flat_map(|r| [r.name.clone(), r.alternate.clone()])
            .collect()
    }

    fn step(&self, step: Step, record: &mut MoveRecord) -> Result<()> {
        let rt = runtime()?;
        match step {
            Step::RecordIntent => {
                record.source_marker = rt
                    .block_on(database_comment(&self.source, self.database()))?
                    .with_context(|| format!("database {} does not exist", self.database()))?;
                save_move(self.context, self.id(), record)
            }
            Step::EnsureTarget => self.reconcile(&self.staged, self.to.cluster_name()),
            Step::SetPasswords => rt.block_on(async {
                let control = self.target.connector.connect(None).await?;
                for role in self.tenant.login_roles() {
                    let path = role.secret_path.as_ref().with_context(|| {
                        format!("{} has no credentials to carry over", role.name)
                    })?;
                    let stored = self.target.store.get(path).await?.with_context(|| {
                        format!(
                            "no stored credentials for {}: nothing to carry over (apply first)",
                            role.name
                        )
                    })?;
                    let login = Ident::new(stored.username.clone());
                    let verifier = pgtenant_engine::pooler::scram_verifier(
                        login.as_str(),
                        &stored.password,
                        stored.scram_iterations(),
                    );
                    control
                        .batch_execute(&sql::set_password_to(&login, &verifier))
                        .await
                        .with_context(|| {
                            format!("setting the password of {login} on the target")
                        })?;
                }
                Ok(())
            }),
            Step::StopWrites => {
                let stopped = rt.block_on(pgtenant_engine::quiesce::quiesce(
                    &self.source.connector,
                    self.database(),
                    &self.logins(),
                ));
                let stopped =
                    stopped.map_err(|e| anyhow::anyhow!(pgtenant_engine::error_chain(&e)))?;
                record.could_login = stopped.iter().map(|r| r.as_str().to_owned()).collect();
                Ok(())
            }
            Step::Dump => self.dump(),
            Step::Restore => {
                let file = self.dump_file();
                let (sha256, size) = pgtenant_backup::sha256_of(&file)?;
                let entry = pgtenant_backup::trash::TrashEntry {
                    tenant: self.id().to_owned(),
                    database: self.database().to_owned(),
                    dropped_at: record.started.clone(),
                    expires_at: record.until.clone(),
                    retention_days: 0,
                    file: file.clone(),
                    size,
                    sha256,
                };
                let restored =
                    pgtenant_backup::trash::Trash::new(self.context.state_dir().join("trash"))
                        .restore(&entry, &self.target.connector, self.tenant.owner().as_str());
                // The dump holds the tenant's data: it goes whether the restore worked or not.
                let _ = std::fs::remove_file(&file);
                restored.context("pg_restore into the target")?;
                self.reconcile(&self.staged, self.to.cluster_name())
            }
            Step::Verify => {
                let source = rt.block_on(row_counts(
                    &self.source,
                    self.database(),
                    self.tenant.owner(),
                ))?;
                let target = rt.block_on(row_counts(
                    &self.target,
                    self.database(),
                    self.tenant.owner(),
                ))?;
                let differences = relocate::count_differences(&source, &target);
                if !differences.is_empty() {
                    bail!("the copy differs: {}", differences.join("; "));
                }
                eprintln!(
                    "move {}: {} tables, the same row counts on both",
                    self.id(),
                    source.len()
                );
                Ok(())
            }
            Step::RecordPlacement => {
                let marker = Marker::parse(&record.source_marker).with_context(|| {
                    format!(
                        "the source database {} has no pgtenant marker",
                        self.database()
                    )
                })?;
                let orphan =
                    relocate::orphan_marker(&marker, self.to.cluster_name(), &record.until);
                rt.block_on(set_marker(
                    &self.source,
                    &self.tenant.database,
                    self.tenant.owner(),
                    &orphan,
                ))?;
                self.record_placement(self.to.cluster_name())
            }
            Step::UpdateCredentials => self.reconcile(&self.target, self.to.cluster_name()),
            Step::Done => Ok(()),
        }
    }

    fn undo(&self, undo: Undo, record: &MoveRecord) -> Result<()> {
        let rt = runtime()?;
        match undo {
            Undo::OrphanTarget => self.orphan_target(record),
            Undo::ResumeSourceLogins => {
                let roles: Vec<Ident> =
                    record.could_login.iter().cloned().map(Ident::new).collect();
                rt.block_on(pgtenant_engine::quiesce::resume(
                    &self.source.connector,
                    &roles,
                ))
                .map_err(|e| anyhow::anyhow!(pgtenant_engine::error_chain(&e)))
            }
            Undo::PlacementBack => {
                if let Some(marker) = Marker::parse(&record.source_marker) {
                    rt.block_on(set_marker(
                        &self.source,
                        &self.tenant.database,
                        self.tenant.owner(),
                        &marker,
                    ))?;
                }
                self.record_placement(self.from.cluster_name())
            }
            // The source's scoped apply writes its endpoint back (and its marker and logins).
            Undo::CredentialsBack => self.reconcile(&self.source, self.from.cluster_name()),
        }
    }

    /// The target's copy stops logging in and becomes a protected orphan (not dropped): no fleet
    /// run counts it as the tenant's home.
    fn orphan_target(&self, record: &MoveRecord) -> Result<()> {
        let rt = runtime()?;
        let Some(comment) = rt.block_on(database_comment(&self.target, self.database()))? else {
            return Ok(()); // never created
        };
        rt.block_on(pgtenant_engine::quiesce::quiesce(
            &self.target.connector,
            self.database(),
            &self.logins(),
        ))
        .map_err(|e| anyhow::anyhow!(pgtenant_engine::error_chain(&e)))?;
        if let Some(marker) = Marker::parse(&comment) {
            let orphan = relocate::orphan_marker(&marker, self.from.cluster_name(), &record.until);
            rt.block_on(set_marker(
                &self.target,
                &self.tenant.database,
                self.tenant.owner(),
                &orphan,
            ))?;
        }
        Ok(())
    }

    /// `<state-dir>/fleet/placements.json` names `cluster` as the tenant's home.
    fn record_placement(&self, cluster: &str) -> Result<()> {
        let mut placements = crate::fleet::recorded(self.context);
        placements.insert(self.id().to_owned(), cluster.to_owned());
        crate::fleet::record(self.context, &placements)
    }

    fn dump_file(&self) -> PathBuf {
        self.context
            .state_dir()
            .join("fleet")
            .join(format!("move-{}.dump", self.id().replace('/', ".")))
    }

    /// `pg_dump -Fc` of the source database as its owner: the control role is lent the owner for
    /// the dump (pg_dump is a session of its own) and it is taken back after, whatever the outcome.
    fn dump(&self) -> Result<()> {
        let rt = runtime()?;
        let file = self.dump_file();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(file.parent().expect("in a directory"))?;
        let owner = self.tenant.owner();
        let superuser = rt.block_on(async {
            let control = self.source.connector.connect(None).await?;
            is_superuser(&control).await
        })?;
        let lend = |statement: String| -> Result<()> {
            if superuser {
                return Ok(());
            }
            rt.block_on(async {
                let control = self.source.connector.connect(None).await?;
                control.batch_execute(&statement).await?;
                Ok(())
            })
        };
        lend(sql::lend(owner, None))?;
        let dumped = pg_tool(
            "pg_dump",
            &self.source,
            self.database(),
            &[
                "--format=custom".into(),
                "--no-owner".into(),
                format!("--role={}", owner.as_str()),
                "--file".into(),
                file.display().to_string(),
            ],
        );
        let taken_back = lend(sql::take_back(owner, None));
        if dumped.is_err() {
            let _ = std::fs::remove_file(&file);
        }
        dumped.and(taken_back)
    }
}

/// Runs a client program (`pg_dump`) against `database` as the control role.
fn pg_tool(program: &str, reconciler: &Reconciler, database: &str, args: &[String]) -> Result<()> {
    let binaries = pgtenant_cluster::find_binaries()?;
    let mut command = std::process::Command::new(binaries.bin_dir.join(program));
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(reconciler.connector.libpq_env(database));
    command.args(args);
    // pg_dump's file holds the tenant's data: umask 0077 for it, as for every program pgtenant runs.
    pgtenant_backup::private_output(&mut command);
    let output = command
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Asked on a session the caller opens anyway, so no step pays a connection for it.
async fn is_superuser(control: &tokio_postgres::Client) -> Result<bool> {
    let row = control
        .query_one(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The comment (pgtenant's marker) of `database`; None when the database does not exist. A
/// cluster that cannot be asked is an error, never a database that does not exist.
async fn database_comment(reconciler: &Reconciler, database: &str) -> Result<Option<String>> {
    let control = reconciler.connector.connect(None).await?;
    let row = control
        .query_opt(
            "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database WHERE datname = $1",
            &[&database],
        )
        .await?;
    Ok(row.map(|row| row.get::<_, Option<String>>(0).unwrap_or_default()))
}

/// COMMENT ON DATABASE is its owner's: a control role that is not a superuser borrows the owner
/// inside the transaction.
async fn set_marker(
    reconciler: &Reconciler,
    database: &Ident,
    owner: &Ident,
    marker: &Marker,
) -> Result<()> {
    let control = reconciler.connector.connect(None).await?;
    let superuser = is_superuser(&control).await?;
    let comment = sql::comment_on_database(database, marker);
    let statement = if superuser {
        comment
    } else {
        format!(
            "BEGIN; {}; {comment}; {}; COMMIT",
            sql::lend(owner, None),
            sql::take_back(owner, None)
        )
    };
    control
        .batch_execute(&statement)
        .await
        .with_context(|| format!("marking database {database}"))?;
    Ok(())
}

/// Every table's row count in `database`, read as its owner in a transaction that is rolled back
/// (the borrowed membership with it).
async fn row_counts(
    reconciler: &Reconciler,
    database: &str,
    owner: &Ident,
) -> Result<Vec<((String, String), i64)>> {
    let client = reconciler.connector.connect(Some(database)).await?;
    let superuser = is_superuser(&client).await?;
    client.batch_execute("BEGIN").await?;
    if !superuser {
        client.batch_execute(&sql::lend(owner, None)).await?;
    }
    client.batch_execute(&sql::set_local_role(owner)).await?;
    let mut counts = Vec::new();
    for row in client.query(relocate::TABLES, &[]).await? {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        let count: i64 = client
            .query_one(&relocate::count_rows(&schema, &table), &[])
            .await
            .with_context(|| format!("counting {schema}.{table} in {database}"))?
            .get(0);
        counts.push(((schema, table), count));
    }
    client.batch_execute("ROLLBACK").await?;
    Ok(counts)
}

/// `pgtenant move NS/DB --abort`: back to the source while its copy is kept — after a completed
/// move, an interrupted one (`moving`, the process gone) or a failed one whose rollback may not
/// have finished.
fn abort(context: &Context, args: &MoveArgs) -> Result<u8> {
    let id = args.tenant.as_str();
    let Some(mut record) = moves(context).remove(id) else {
        bail!(
            "no move of {id} is recorded in {}",
            moves_path(context).display()
        );
    };
    // `moving` with the lock free: interrupted. `failed`: rolled back, perhaps not all of it (a
    // cluster down during the rollback); every undo is safe to run again.
    if record.state == "aborted" {
        bail!("the last move of {id} is already aborted: nothing to abort");
    }
    let now = pgtenant_backup::Timestamp::now().to_rfc3339();
    if record.state == "moved" && now >= record.until {
        bail!(
            "the copy of {id} on `{}` was kept until {}: too late to abort",
            record.from,
            record.until
        );
    }
    let member = |name: &str| {
        context
            .fleet()
            .iter()
            .find(|m| m.cluster_name() == name)
            .with_context(|| format!("cluster `{name}` of the move is not in the config any more"))
    };
    let (from, to) = (member(&record.from)?, member(&record.to)?);
    let repo = context.load_repo(args.repo.as_deref(), false)?;
    let Some(spec) = repo.databases.iter().find(|d| d.tenant_id() == id) else {
        bail!("{id} is not declared in the apps repo");
    };
    let tenant = DesiredTenant::from_spec(spec);
    let work = Move {
        context,
        desired: Desired {
            tenants: vec![tenant.clone()],
            drops_held_because: None,
            failed_files: Vec::new(),
        },
        tenant,
        from,
        to,
        source: reconciler(from)?,
        staged: staged(&reconciler(to)?),
        target: reconciler(to)?,
    };
    for step in relocate::plan_abort(id, &record.from, &record.to) {
        eprintln!("move {id} --abort: {step}");
    }
    for undo in [
        Undo::OrphanTarget,
        Undo::PlacementBack,
        Undo::ResumeSourceLogins,
        Undo::CredentialsBack,
    ] {
        eprintln!("move {id} --abort: {undo:?}");
        work.undo(undo, &record)
            .with_context(|| format!("aborting the move of {id}: step {undo:?}"))?;
    }
    // A move interrupted between its dump and its restore left the tenant's data on disk.
    match std::fs::remove_file(work.dump_file()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", work.dump_file().display()))
        }
        _ => {}
    }
    let was = std::mem::replace(&mut record.state, "aborted".into());
    save_move(context, id, &record)?;
    match args.format {
        Format::Json => render::print_json(&json!({
            "tenant": id, "aborted": true, "cluster": record.from, "was": was,
            "target_copy": "protected orphan (not dropped)",
        }))?,
        Format::Text => outln!(
            "{id} is back on `{}`; its copy on `{}` is kept as a protected orphan (not dropped, its logins stopped)",
            record.from,
            record.to
        ),
    }
    Ok(EXIT_OK)
}
