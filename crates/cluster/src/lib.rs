//! The embedded local PostgreSQL cluster.
//!
//! When the user gives pgtenant no admin URL, it creates and runs a private cluster of its
//! own: reachable over TLS on 127.0.0.1 and over a Unix socket in a private directory, with
//! SCRAM passwords on both, and a control role that can create databases and roles but is not
//! a superuser. Applications get the TLS address; the control role uses the socket. The cluster is driven entirely
//! through the PostgreSQL server binaries (initdb, pg_ctl, postgres); this crate never
//! connects to it as a client.
//!
//! Layout of the cluster directory:
//!
//! ```text
//! cluster.json        state, including passwords (0600, invoking user)
//! ca.crt, ca.key      the cluster's private CA (ca.key 0600, invoking user)
//! data/               the data directory (0700, server user)
//! log/postgresql.log  the server log (server user)
//! socket/             the Unix socket (0700, server user)
//! pooler/             pgbouncer's files when it is installed (0700, server user; crates/pooler)
//! ```
//!
//! [`EmbeddedCluster::enable_archiving`] turns on WAL archiving (for pgBackRest, which logs in
//! over the private Unix socket); [`ScratchCluster`] runs throwaway servers on restored backups.

mod binaries;
mod config;
mod os_user;
mod scratch;
mod state;
#[cfg(feature = "test-support")]
mod test_cluster;
mod tls;

use std::fmt::Write as _;
use std::fs;
use std::io::{self, ErrorKind, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

use pgtenant_pg::process::{ProcessError, Run};

pub use binaries::{
    find_binaries, find_binaries_for_version, find_pgbouncer, Binaries, PGBOUNCER_ENV, PG_BIN_ENV,
};
pub use os_user::ServerUser;
pub use scratch::{remove_leftovers, ScratchCluster};
#[cfg(feature = "test-support")]
pub use test_cluster::{skip_or_fail, TestCluster, ALLOW_SKIP_ENV};

use os_user::write_new_file;
use state::State;

/// The role pgtenant manages tenants with.
pub const CONTROL_ROLE: &str = "pgtenant";
/// The bootstrap superuser created by initdb.
pub const SUPERUSER: &str = "postgres";
/// The database both URLs point at.
const DATABASE: &str = "postgres";

const STATE_FILE: &str = "cluster.json";
const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const DATA_DIR: &str = "data";
const LOG_DIR: &str = "log";
const LOG_FILE: &str = "postgresql.log";
const SOCKET_DIR: &str = "socket";
const POOLER_DIR: &str = "pooler";
/// initdb reads the superuser password from a file rather than from its arguments, which
/// other local users could see.
const INITDB_PWFILE: &str = ".initdb-pwfile";
/// Seconds pg_ctl waits for the server to start or stop.
const PG_CTL_TIMEOUT: &str = "60";
/// The end of a program's output or of a log, quoted in errors.
pub(crate) use pgtenant_pg::process::tail;
/// Free ports tried for a server whose port we choose, when another process takes the chosen
/// one between the choice and the server's start.
const PORT_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Listen port; None = pick a free port on 127.0.0.1 the first time and remember it.
    pub port: Option<u16>,
    /// For tests: fsync=off, synchronous_commit=off, full_page_writes=off, initdb --no-sync.
    /// Never for real use.
    pub fast: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {}; install \
         PostgreSQL server binaries: apt-get install postgresql (or set PGTENANT_PG_BIN to the \
         directory holding initdb and pg_ctl)",
        list_paths(searched)
    )]
    BinariesNotFound { searched: Vec<PathBuf> },

    #[error("no pgtenant cluster has been created in {}", dir.display())]
    NotInitialized { dir: PathBuf },

    #[error("a pgtenant cluster already exists in {}", dir.display())]
    AlreadyInitialized { dir: PathBuf },

    #[error("`{program} {}` failed ({status}){}", args.join(" "), indent(output))]
    Command {
        program: String,
        /// Never holds a secret: passwords go through files and stdin.
        args: Vec<String>,
        status: String,
        /// The tail of the program's error output, and of the server log where relevant.
        output: String,
    },

    /// The cause is left to `source()`, as error reporters print the chain.
    #[error("I/O error on {}", path.display())]
    Io { path: PathBuf, source: io::Error },

    #[error(
        "the PostgreSQL server runs as OS user `{user}`, which cannot enter {dir}: run \
         `chmod o+x {dir}` or choose another state directory",
        dir = dir.display()
    )]
    NotTraversable { dir: PathBuf, user: String },

    #[error(
        "running as root, but neither OS user `postgres` nor `nobody` exists to run the \
         PostgreSQL server, which refuses to run as root; create a `postgres` user or run \
         pgtenant as an ordinary user"
    )]
    NoServerUser,

    #[error("generating the cluster's TLS certificates failed")]
    Tls(#[from] rcgen::Error),

    #[error("{}: {reason}", path.display())]
    State { path: PathBuf, reason: String },

    #[error(
        "port {port} of the cluster in {} is in use by another process; stop that process \
         and try again (the cluster keeps the port it was created with)",
        dir.display()
    )]
    PortInUse { port: u16, dir: PathBuf },
}

impl ClusterError {
    fn io(path: &Path, source: io::Error) -> Self {
        ClusterError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

fn indent(output: &str) -> String {
    output.lines().fold(String::new(), |mut text, line| {
        let _ = write!(text, "\n  {line}");
        text
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    pub initialized: bool,
    pub running: bool,
    pub port: Option<u16>,
    pub data_dir: PathBuf,
    /// Major version the data directory was created by, e.g. "15".
    pub version: Option<String>,
    pub server_user: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

/// A cluster directory. Holds only the path: the state is read from `cluster.json` on each
/// call, so the handle never goes stale when another process changes the cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedCluster {
    dir: PathBuf,
}

impl EmbeddedCluster {
    /// `dir` is the cluster's own directory (the CLI passes `<state-dir>/cluster`). Nothing is
    /// created yet.
    pub fn at(dir: &Path) -> Self {
        // Absolute, because the server binaries run in another working directory and the
        // CA path ends up in URLs used from anywhere.
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        EmbeddedCluster { dir }
    }

    /// Creates (the first time) and starts the cluster. Idempotent: an initialized cluster is
    /// only started if stopped; a running one is left alone. `options` apply to creation,
    /// but a port that contradicts the one the cluster was created with is an error.
    pub fn ensure_running(dir: &Path, options: &ClusterOptions) -> Result<Self, ClusterError> {
        let cluster = Self::at(dir);
        match cluster.load_state()? {
            Some(state) if state.initialized => {
                if let Some(port) = options.port.filter(|p| *p != state.port) {
                    return Err(ClusterError::State {
                        path: cluster.dir.clone(),
                        reason: format!(
                            "the cluster was created with port {}, not {port}",
                            state.port
                        ),
                    });
                }
                cluster.start()?;
            }
            _ => {
                cluster.init(options)?;
                // A port we chose may be taken before the first start; one the user named is kept.
                match options.port {
                    None => cluster.start_on_chosen_port()?,
                    Some(_) => cluster.start()?,
                }
            }
        }
        Ok(cluster)
    }

    /// Creates the cluster without starting it; an error if one exists already.
    pub fn init(&self, options: &ClusterOptions) -> Result<(), ClusterError> {
        let state_path = self.state_path();
        if let Some(state) = State::load(&state_path)? {
            return Err(if state.initialized {
                ClusterError::AlreadyInitialized {
                    dir: self.dir.clone(),
                }
            } else {
                ClusterError::State {
                    path: self.dir.clone(),
                    reason: "an earlier attempt to create a cluster here did not finish; \
                             delete this directory and try again"
                        .into(),
                }
            });
        }
        let binaries = find_binaries()?;
        let user = ServerUser::for_new_cluster()?;

        fs::create_dir_all(&self.dir).map_err(|e| ClusterError::io(&self.dir, e))?;
        // The server account must pass through to data/ and log/; what it must not read
        // (passwords, the CA key) sits in files only the invoking user can read.
        let mode = if user.switches() { 0o711 } else { 0o700 };
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(mode))
            .map_err(|e| ClusterError::io(&self.dir, e))?;
        user.check_traversable(&self.dir)?;

        let port = match options.port {
            Some(port) => port,
            None => free_port()?,
        };
        let mut state = State {
            port,
            server_user: user.name.clone(),
            bin_dir: binaries.bin_dir.clone(),
            superuser_password: state::random_password(),
            control_password: state::random_password(),
            pooler_port: None,
            initialized: false,
        };
        state.save(&state_path)?;

        create_private_dir(&self.data_dir(), &user)?;
        create_private_dir(&self.dir.join(LOG_DIR), &user)?;
        self.initdb(&binaries, &user, &state, options.fast)?;
        self.write_tls(&user)?;
        self.write_config(&user, port, options.fast)?;
        self.update_config(&state, &user)?;
        self.create_control_role(&binaries, &user, &state, options.fast)?;

        state.initialized = true;
        state.save(&state_path)
    }

    /// Starts the server and waits until it accepts connections; nothing to do if it runs.
    ///
    /// Brings the configuration of a cluster made by an older pgtenant up to date first (the
    /// Unix socket and its `pg_hba.conf` line): a running server is reloaded, and listens on
    /// the socket from its next start ([`Self::control_url`] uses TCP until then).
    pub fn start(&self) -> Result<(), ClusterError> {
        let state = self.initialized_state()?;
        let (binaries, user) = self.server(&state)?;
        let changed = self.update_config(&state, &user)?;
        if self.is_running(&binaries, &user)? {
            if changed {
                let mut cmd = self.pg_ctl(&binaries, &user);
                cmd.arg("reload");
                run(&mut cmd, None)?;
            }
            return Ok(());
        }
        self.start_server(&binaries, &user, &state)
    }

    /// Starts a stopped server with the configuration as it is.
    fn start_server(
        &self,
        binaries: &Binaries,
        user: &ServerUser,
        state: &State,
    ) -> Result<(), ClusterError> {
        // Checked up front because the server's own complaint is buried in its log.
        if let Err(e) = TcpListener::bind((Ipv4Addr::LOCALHOST, state.port)) {
            if e.kind() == ErrorKind::AddrInUse {
                return Err(ClusterError::PortInUse {
                    port: state.port,
                    dir: self.dir.clone(),
                });
            }
        }
        // pg_ctl waits by watching postmaster.pid for the "ready" mark, so it needs no
        // socket to connect to.
        let mut cmd = self.pg_ctl(binaries, user);
        cmd.arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", PG_CTL_TIMEOUT, "start"]);
        run(&mut cmd, None)
            .map(drop)
            .map_err(|e| self.with_log_tail(e))
    }

    /// Starts a stopped server whose port pgtenant chose (never one the user named): when another
    /// process took the port since, moves the cluster to a new free port and tries again, up to
    /// [`PORT_ATTEMPTS`] times in all.
    fn start_on_chosen_port(&self) -> Result<(), ClusterError> {
        let mut attempt = 1;
        loop {
            match self.start() {
                Err(e) if attempt < PORT_ATTEMPTS && port_taken(&e) => {
                    attempt += 1;
                    self.set_port(free_port()?)?;
                }
                result => return result,
            }
        }
    }

    /// Moves a stopped cluster to `port`: in `cluster.json` and in the server's settings.
    fn set_port(&self, port: u16) -> Result<(), ClusterError> {
        let mut state = self.initialized_state()?;
        let conf_path = self.data_dir().join(config::CONF_FILE);
        let conf = fs::read_to_string(&conf_path).map_err(|e| ClusterError::io(&conf_path, e))?;
        let conf: String = conf
            .lines()
            .map(|line| match line.starts_with("port = ") {
                true => format!("port = {port}\n"),
                false => format!("{line}\n"),
            })
            .collect();
        // Written in place: the file belongs to the server account, which keeps it.
        fs::write(&conf_path, conf).map_err(|e| ClusterError::io(&conf_path, e))?;
        state.port = port;
        state.save(&self.state_path())
    }

    /// Stops, then starts the server: for settings that only take effect at server start.
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.stop()?;
        self.start()
    }

    /// Makes a running server re-read its configuration files; nothing to do if it is stopped.
    pub fn reload(&self) -> Result<(), ClusterError> {
        let state = self.initialized_state()?;
        let (binaries, user) = self.server(&state)?;
        if !self.is_running(&binaries, &user)? {
            return Ok(());
        }
        let mut cmd = self.pg_ctl(&binaries, &user);
        cmd.arg("reload");
        run(&mut cmd, None).map(drop)
    }

    /// Turns on WAL archiving with `archive_command` (`%p` is the segment's path) and
    /// `archive_timeout`, and lets the server's own OS account log in as the superuser over the
    /// private Unix socket ([`Self::socket_dir`]; peer authentication), which is how pgBackRest
    /// talks to the server. Idempotent; returns whether a file changed.
    ///
    /// A running server is reloaded, but `archive_mode` and `wal_level` take effect only at its
    /// next start: the caller checks `pg_settings.pending_restart` and restarts
    /// ([`Self::restart`]) when it can.
    pub fn enable_archiving(
        &self,
        archive_command: &str,
        archive_timeout_secs: u32,
    ) -> Result<bool, ClusterError> {
        let state = self.initialized_state()?;
        let (_, user) = self.server(&state)?;
        let data = self.data_dir();
        let block = config::archive_block(archive_command, archive_timeout_secs);
        let mut changed = rewrite(&data.join(config::CONF_FILE), |current| {
            config::with_archive_block(current, &block)
        })?;
        // After the block: the HBA rules follow whether archiving is on.
        changed |= self.update_config(&state, &user)?;
        if changed {
            self.reload()?;
        }
        Ok(changed)
    }

    /// Makes the socket directory, the server's settings, HBA rules and ident map what this
    /// version of pgtenant writes (a cluster made by an older one had no socket, or only with
    /// archiving, or SCRAM for the control role on the socket).
    /// Returns whether a file changed; the caller reloads a running server.
    fn update_config(&self, state: &State, user: &ServerUser) -> Result<bool, ClusterError> {
        let socket = self.socket_dir();
        match fs::DirBuilder::new().mode(0o700).create(&socket) {
            Ok(()) => user.chown(&socket)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ClusterError::io(&socket, e)),
        }
        let data = self.data_dir();
        let mut changed = rewrite(&data.join(config::CONF_FILE), |current| {
            config::with_socket(current, &socket, state.port)
        })?;
        let superuser_by_peer = self.archiving_enabled().then_some(SUPERUSER);
        changed |= rewrite(&data.join("pg_ident.conf"), |_| {
            config::ident_conf(user.name(), CONTROL_ROLE, superuser_by_peer)
        })?;
        changed |= rewrite(&data.join("pg_hba.conf"), |_| {
            config::hba(CONTROL_ROLE, superuser_by_peer)
        })?;
        Ok(changed)
    }

    /// Whether [`Self::enable_archiving`] has configured this cluster.
    pub fn archiving_enabled(&self) -> bool {
        fs::read_to_string(self.data_dir().join(config::CONF_FILE))
            .is_ok_and(|conf| conf.lines().any(|l| l == config::ARCHIVE_BEGIN))
    }

    /// The directory of the server's Unix socket (0700, the server's account), links in the
    /// cluster's path resolved: the server's settings, `postmaster.pid` and pgbouncer's files
    /// name it so, whichever path (a link in a state directory, say) the cluster is opened by.
    pub fn socket_dir(&self) -> PathBuf {
        let dir = fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        dir.join(SOCKET_DIR)
    }

    /// Whether the running server listens on its Unix socket: a cluster made by an older
    /// pgtenant does only after its first restart by this one, and a state directory whose path
    /// is too long for a socket never does. Read from `postmaster.pid`, whose fifth line is the
    /// server's socket directory, and the socket file itself.
    pub fn listens_on_socket(&self) -> bool {
        let Ok(state) = self.initialized_state() else {
            return false;
        };
        let socket = self.socket_dir();
        let pid_file = self.data_dir().join("postmaster.pid");
        let listed = fs::read_to_string(pid_file)
            .is_ok_and(|pid| pid.lines().nth(4) == Some(&*socket.display().to_string()));
        listed && socket.join(format!(".s.PGSQL.{}", state.port)).exists()
    }

    /// The cluster's own directory (holding `data/`, `log/`, the CA).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The OS account the server runs as, for programs that must act as it (pgBackRest).
    pub fn server_user(&self) -> Result<ServerUser, ClusterError> {
        Ok(self.server(&self.initialized_state()?)?.1)
    }

    /// The server binaries the cluster runs with.
    pub fn binaries(&self) -> Result<Binaries, ClusterError> {
        Ok(self.server(&self.initialized_state()?)?.0)
    }

    /// Stops the server (fast shutdown: sessions are disconnected, transactions rolled back);
    /// nothing to do if it is not running or there is no cluster.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let Some(state) = self.load_state()?.filter(|s| s.initialized) else {
            return Ok(());
        };
        let (binaries, user) = self.server(&state)?;
        if !self.is_running(&binaries, &user)? {
            return Ok(());
        }
        let mut cmd = self.pg_ctl(&binaries, &user);
        cmd.args(["-m", "fast", "-w", "-t", PG_CTL_TIMEOUT, "stop"]);
        run(&mut cmd, None)
            .map(drop)
            .map_err(|e| self.with_log_tail(e))
    }

    pub fn status(&self) -> Result<ClusterStatus, ClusterError> {
        let state = self.load_state()?;
        let initialized = state.as_ref().is_some_and(|s| s.initialized);
        let running = match &state {
            Some(state) if initialized => {
                let (binaries, user) = self.server(state)?;
                self.is_running(&binaries, &user)?
            }
            _ => false,
        };
        let ca_cert = self.ca_cert_path();
        Ok(ClusterStatus {
            initialized,
            running,
            port: state.as_ref().map(|s| s.port),
            data_dir: self.data_dir(),
            version: self.data_version(),
            server_user: state.map(|s| s.server_user),
            ca_cert: ca_cert.exists().then_some(ca_cert),
        })
    }

    pub fn is_initialized(&self) -> bool {
        matches!(self.load_state(), Ok(Some(state)) if state.initialized)
    }

    /// libpq URL of the control role, which pgtenant manages tenants with: LOGIN CREATEDB
    /// CREATEROLE, not a superuser. Over the private Unix socket when the server listens there
    /// (SCRAM, no TLS: the server offers none on a socket, and no other account can reach it),
    /// else over TCP with TLS. Applications are never given this URL.
    pub fn control_url(&self) -> Result<String, ClusterError> {
        let state = self.initialized_state()?;
        if self.listens_on_socket() {
            return Ok(self.socket_url(CONTROL_ROLE, &state.control_password, state.port));
        }
        Ok(self.url(CONTROL_ROLE, &state.control_password, state.port))
    }

    /// libpq URL of the bootstrap superuser, for tests and maintenance; pgtenant's engine
    /// works through [`Self::control_url`] only.
    pub fn superuser_url(&self) -> Result<String, ClusterError> {
        let state = self.initialized_state()?;
        Ok(self.url(SUPERUSER, &state.superuser_password, state.port))
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// Where applications reach the cluster through its pooler (host, port): None when pgbouncer
    /// is not installed ([`find_pgbouncer`]) or the cluster does not exist. The port is chosen
    /// (a free one) and recorded the first time it is asked for, so credentials written before
    /// pgbouncer first starts already name it.
    pub fn pooler_endpoint(&self) -> Option<(String, u16)> {
        find_pgbouncer()?;
        let port = self.pooler_port().ok()?;
        Some(("127.0.0.1".to_string(), port))
    }

    /// The pooler's port, chosen and recorded in `cluster.json` the first time.
    pub fn pooler_port(&self) -> Result<u16, ClusterError> {
        let mut state = self.initialized_state()?;
        if let Some(port) = state.pooler_port {
            return Ok(port);
        }
        let port = free_port()?;
        state.pooler_port = Some(port);
        state.save(&self.state_path())?;
        Ok(port)
    }

    /// Moves the pooler to another port (its recorded one was taken by another process).
    pub fn set_pooler_port(&self, port: u16) -> Result<(), ClusterError> {
        let mut state = self.initialized_state()?;
        state.pooler_port = Some(port);
        state.save(&self.state_path())
    }

    /// The pooler's directory (its configuration, auth file, pid file, log and socket).
    pub fn pooler_dir(&self) -> PathBuf {
        self.dir.join(POOLER_DIR)
    }

    /// The certificate and key pgbouncer presents to clients: the server's own, issued by the
    /// cluster's CA for 127.0.0.1, localhost and ::1, where the pooler listens too.
    pub fn pooler_tls(&self) -> (PathBuf, PathBuf) {
        let data = self.data_dir();
        (
            data.join(config::SERVER_CERT),
            data.join(config::SERVER_KEY),
        )
    }

    pub fn port(&self) -> Result<u16, ClusterError> {
        Ok(self.initialized_state()?.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(DATA_DIR)
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join(LOG_DIR).join(LOG_FILE)
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn load_state(&self) -> Result<Option<State>, ClusterError> {
        State::load(&self.state_path())
    }

    fn initialized_state(&self) -> Result<State, ClusterError> {
        self.load_state()?
            .filter(|s| s.initialized)
            .ok_or_else(|| ClusterError::NotInitialized {
                dir: self.dir.clone(),
            })
    }

    /// The major version recorded in the data directory.
    fn data_version(&self) -> Option<String> {
        let text = fs::read_to_string(self.data_dir().join("PG_VERSION")).ok()?;
        Some(text.trim().to_string())
    }

    /// The binaries and the account to run an existing cluster's server with.
    fn server(&self, state: &State) -> Result<(Binaries, ServerUser), ClusterError> {
        let data_dir = self.data_dir();
        let user = ServerUser::for_existing_cluster(&state.server_user, &data_dir)?;
        user.check_traversable(&data_dir)?;
        if let Some(binaries) = Binaries::in_dir(&state.bin_dir) {
            return Ok((binaries, user));
        }
        // The binaries init used are gone (say, PGTENANT_PG_BIN pointed at a build tree
        // since removed); others will do if they are of the same major version.
        let found = find_binaries()?;
        match self.data_version() {
            Some(version) if version == found.version => Ok((found, user)),
            version => Err(ClusterError::State {
                path: data_dir,
                reason: format!(
                    "created by PostgreSQL {} with the binaries in {}, which are gone; the \
                     binaries found in {} are version {}",
                    version.as_deref().unwrap_or("(unknown version)"),
                    state.bin_dir.display(),
                    found.bin_dir.display(),
                    found.version
                ),
            }),
        }
    }

    fn pg_ctl(&self, binaries: &Binaries, user: &ServerUser) -> Command {
        let mut cmd = user.command(&binaries.program("pg_ctl"), &self.dir);
        cmd.arg("-D").arg(self.data_dir());
        cmd
    }

    fn is_running(&self, binaries: &Binaries, user: &ServerUser) -> Result<bool, ClusterError> {
        let mut cmd = self.pg_ctl(binaries, user);
        cmd.arg("status");
        let output = output(&mut cmd, None)?;
        // pg_ctl status: 0 = running, 3 = not running; anything else is a real problem.
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(command_error(&cmd, output.status, &output.stderr)),
        }
    }

    fn initdb(
        &self,
        binaries: &Binaries,
        user: &ServerUser,
        state: &State,
        fast: bool,
    ) -> Result<(), ClusterError> {
        let pwfile = RemoveOnDrop(self.dir.join(INITDB_PWFILE));
        let password = format!("{}\n", state.superuser_password);
        write_new_file(&pwfile.0, password.as_bytes(), 0o600, Some(user))?;
        let mut cmd = user.command(&binaries.program("initdb"), &self.dir);
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "--auth=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.0.display()))
            .args(["-E", "UTF8", "--locale=C"]);
        if fast {
            cmd.arg("--no-sync");
        }
        run(&mut cmd, None).map(drop)
    }

    fn write_tls(&self, user: &ServerUser) -> Result<(), ClusterError> {
        let tls = tls::generate()?;
        let data = self.data_dir();
        write_new_file(&self.ca_cert_path(), tls.ca_cert.as_bytes(), 0o644, None)?;
        write_new_file(&self.dir.join(CA_KEY), tls.ca_key.as_bytes(), 0o600, None)?;
        // The server refuses a key that others can read.
        let server_cert = data.join(config::SERVER_CERT);
        write_new_file(&server_cert, tls.server_cert.as_bytes(), 0o600, Some(user))?;
        let server_key = data.join(config::SERVER_KEY);
        write_new_file(&server_key, tls.server_key.as_bytes(), 0o600, Some(user))
    }

    fn write_config(&self, user: &ServerUser, port: u16, fast: bool) -> Result<(), ClusterError> {
        let data = self.data_dir();
        let conf = config::server_conf(port, &self.socket_dir(), fast);
        write_new_file(
            &data.join(config::CONF_FILE),
            conf.as_bytes(),
            0o600,
            Some(user),
        )?;
        // Both files exist already, created by initdb and owned by the server account, which
        // writing in place keeps.
        let postgresql_conf = data.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&postgresql_conf)
            .and_then(|mut f| f.write_all(config::INCLUDE_LINE.as_bytes()))
            .map_err(|e| ClusterError::io(&postgresql_conf, e))
    }

    /// Creates the control role in single-user mode, before the server ever listens, so no
    /// client connection (and no client library) is needed.
    fn create_control_role(
        &self,
        binaries: &Binaries,
        user: &ServerUser,
        state: &State,
        fast: bool,
    ) -> Result<(), ClusterError> {
        let verifier =
            postgres_protocol::password::scram_sha_256(state.control_password.as_bytes());
        let sql = config::create_control_role_sql(CONTROL_ROLE, &verifier);
        let mut cmd = user.command(&binaries.program("postgres"), &self.dir);
        cmd.arg("--single")
            .arg("-D")
            .arg(self.data_dir())
            // A failed statement would otherwise be echoed, verifier and all, to stderr and
            // from there into our error message.
            .args(["-c", "log_min_error_statement=panic"]);
        if fast {
            cmd.arg("-F");
        }
        cmd.arg(DATABASE);
        let output = run(&mut cmd, Some(sql.as_bytes()))?;
        // Single-user mode reports a failed statement on stderr but still exits with 0.
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("ERROR:") || stderr.contains("FATAL:") {
            return Err(command_error(&cmd, output.status, &output.stderr));
        }
        Ok(())
    }

    fn url(&self, user: &str, password: &str, port: u16) -> String {
        // Passwords are alphanumeric, so only the CA path needs escaping.
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{port}/{DATABASE}\
             ?sslmode=verify-full&sslrootcert={}",
            percent_encode(&self.ca_cert_path())
        )
    }

    /// `user` over the Unix socket: the server's port names the socket file in the directory.
    fn socket_url(&self, user: &str, password: &str, port: u16) -> String {
        format!(
            "postgresql://{user}:{password}@/{DATABASE}?host={}&port={port}&sslmode=disable",
            percent_encode(&self.socket_dir())
        )
    }

    /// Adds the end of the server log to a failed pg_ctl's error, where the actual reason is.
    fn with_log_tail(&self, err: ClusterError) -> ClusterError {
        match err {
            ClusterError::Command {
                program,
                args,
                status,
                mut output,
            } => {
                let log = self.log_file();
                if let Ok(text) = fs::read(&log) {
                    let _ = write!(output, "\nend of {}:\n{}", log.display(), tail(&text));
                }
                ClusterError::Command {
                    program,
                    args,
                    status,
                    output,
                }
            }
            other => other,
        }
    }
}

/// Deletes a file when it goes out of scope, error or not.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Rewrites `path` in place (its owner, the server's account, keeps it) with `wanted` of its
/// contents when that differs; returns whether it did.
fn rewrite(path: &Path, wanted: impl FnOnce(&str) -> String) -> Result<bool, ClusterError> {
    let current = fs::read_to_string(path).map_err(|e| ClusterError::io(path, e))?;
    let wanted = wanted(&current);
    if current == wanted {
        return Ok(false);
    }
    fs::write(path, wanted).map_err(|e| ClusterError::io(path, e))?;
    Ok(true)
}

fn create_private_dir(path: &Path, owner: &ServerUser) -> Result<(), ClusterError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| ClusterError::io(path, e))?;
    owner.chown(path)
}

/// A port on 127.0.0.1 that is free right now.
fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| ClusterError::io(Path::new("127.0.0.1:0"), e))
}

/// `cmd` to run through [`pgtenant_pg::process::Run`] (it dies with us), fed `stdin`.
fn runner<'a>(cmd: &'a mut Command, stdin: Option<&'a [u8]>) -> Run<'a> {
    let run = Run::new(cmd);
    match stdin {
        Some(input) => run.stdin(input),
        None => run,
    }
}

/// Whether a failed start failed because another process listens on the port: seen before the
/// start, or by the server itself (its log tail is in the error).
fn port_taken(err: &ClusterError) -> bool {
    match err {
        ClusterError::PortInUse { .. } => true,
        ClusterError::Command { output, .. } => output.contains("Address already in use"),
        _ => false,
    }
}

/// Runs `cmd`, feeding it `stdin`, and captures its output whatever its exit status.
fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output, ClusterError> {
    Ok(runner(cmd, stdin).output()?)
}

/// Like [`output`], but a failing exit status is an error.
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output, ClusterError> {
    Ok(runner(cmd, stdin).success()?)
}

fn command_error(cmd: &Command, status: ExitStatus, stderr: &[u8]) -> ClusterError {
    ClusterError::Command {
        program: cmd.get_program().to_string_lossy().into_owned(),
        args: cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        status: status.to_string(),
        output: tail(stderr),
    }
}

impl From<ProcessError> for ClusterError {
    fn from(error: ProcessError) -> Self {
        match error {
            ProcessError::Spawn { program, source } => ClusterError::io(&program, source),
            failed => {
                let (program, args, status, output) = failed.parts().expect("the program ran");
                ClusterError::Command {
                    program: program.to_string_lossy().into_owned(),
                    args: args.to_vec(),
                    status,
                    output: output.to_string(),
                }
            }
        }
    }
}

/// Escapes a path for a URL query value: libpq decodes %XX there.
fn percent_encode(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    pgtenant_pg::conninfo::percent_encode(path.as_os_str().as_bytes(), b"/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_path_is_escaped_in_urls() {
        assert_eq!(
            percent_encode(Path::new("/tmp/my state/ca&1.crt")),
            "/tmp/my%20state/ca%261.crt"
        );
    }

    #[test]
    fn urls_need_an_initialized_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = EmbeddedCluster::at(&dir.path().join("cluster"));
        assert!(!cluster.is_initialized());
        assert!(matches!(
            cluster.control_url(),
            Err(ClusterError::NotInitialized { .. })
        ));
        assert!(matches!(
            cluster.port(),
            Err(ClusterError::NotInitialized { .. })
        ));
        cluster.stop().unwrap();
        let status = cluster.status().unwrap();
        assert!(!status.initialized && !status.running);
        assert_eq!(status.port, None);
        assert_eq!(status.data_dir, dir.path().join("cluster/data"));
    }

    #[test]
    fn relative_dir_becomes_absolute() {
        let cluster = EmbeddedCluster::at(Path::new("state/cluster"));
        assert!(cluster.data_dir().is_absolute());
        assert!(cluster.ca_cert_path().ends_with("state/cluster/ca.crt"));
    }

    #[test]
    fn unfinished_init_is_reported_not_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = EmbeddedCluster::at(dir.path());
        let state = State {
            port: 1,
            server_user: "postgres".into(),
            bin_dir: "/nonexistent".into(),
            superuser_password: state::random_password(),
            control_password: state::random_password(),
            pooler_port: None,
            initialized: false,
        };
        state.save(&cluster.state_path()).unwrap();
        let err = cluster.init(&ClusterOptions::default()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("did not finish"), "{message}");
        assert!(!message.contains(&state.superuser_password));
        assert!(!cluster.is_initialized());
    }

    #[test]
    fn failed_role_creation_is_an_error_without_the_verifier() {
        let tc = TestCluster::start().unwrap();
        let cluster = &tc.cluster;
        cluster.stop().unwrap();
        let state = cluster.initialized_state().unwrap();
        let (binaries, user) = cluster.server(&state).unwrap();
        let err = cluster
            .create_control_role(&binaries, &user, &state, true)
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("already exists"), "{message}");
        assert!(!message.contains("SCRAM-SHA-256$"), "{message}");
    }

    #[test]
    fn command_errors_show_program_args_and_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo first >&2; echo second >&2; exit 3"]);
        let message = run(&mut cmd, None).unwrap_err().to_string();
        assert!(
            message.starts_with(
                "`sh -c echo first >&2; echo second >&2; exit 3` failed (exit status: 3)"
            ),
            "{message}"
        );
        assert!(message.ends_with("\n  first\n  second"), "{message}");
    }
}
