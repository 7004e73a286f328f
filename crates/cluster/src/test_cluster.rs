//! Throwaway clusters for tests (feature `test-support`).
//!
//! # One template per test process, one copy per test
//!
//! Creating a cluster (initdb, the control role in single-user mode) is most of what a test
//! of the suite costs. Tests still need a cluster each: `apply` takes a cluster-wide lock and
//! refuses to run beside another apply, and it plans against every pgtenant-managed database on
//! the cluster, so tests of one binary (which run in parallel threads) sharing a cluster would
//! see each other's tenants as removed from their repos and hold or drop them.
//!
//! So each test process creates one *template* the first time a test asks for a cluster
//! (initdb, control role, stopped; [`OnceLock`] makes the other threads wait for it), and
//! [`TestCluster::start`] copies the template's directory (`cp -a`, some 40 MB), gives the
//! copy its own CA and server certificate and a free port, and starts it. Every test keeps a
//! cluster of its own; initdb is paid once per test binary.
//!
//! The template lives in `$TMPDIR/pgtenant-template-<pid>-*` and is deleted when the process
//! exits (`atexit`); one left behind by a killed process is deleted by the next test process
//! that makes a template. Being per process, templates need no lock between test binaries
//! that run at the same time.
//!
//! Copies share the template's passwords (of the bootstrap superuser and the control role):
//! changing them needs a running server and a client, which is what the template saves. Each
//! copy has its own data, port and CA, so no test can reach or change another's cluster.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::{
    command_error, config, free_port, ClusterError, ClusterOptions, EmbeddedCluster, CA_CERT,
    CA_KEY,
};

/// Set to `1` to let tests that cannot run here (not root, no IPv6, …) pass as skipped.
pub const ALLOW_SKIP_ENV: &str = "PGTENANT_TEST_ALLOW_SKIP";

/// Prefix of the template directories in the temporary directory; the pid follows.
const TEMPLATE_PREFIX: &str = "pgtenant-template-";

/// The template of this process: its directory (holding `cluster/`), or why it failed.
static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// A throwaway cluster in a temporary directory, for tests: a copy of the process's template
/// (created with the fast options), started on a free port, stopped and deleted on drop.
pub struct TestCluster {
    pub cluster: EmbeddedCluster,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    pub fn start() -> Result<Self, ClusterError> {
        let template = template()?;
        let dir = tempfile::Builder::new()
            .prefix("pgtenant-test-")
            .tempdir()
            .map_err(|e| ClusterError::io(&std::env::temp_dir(), e))?;
        // When we are root the server runs as another account, which must be able to enter
        // the directory whatever the umask (or tempfile version) made of it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(|e| ClusterError::io(dir.path(), e))?;
        let target = dir.path().join("cluster");
        // -a keeps modes and owners (the data directory belongs to the server account).
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(template.join("cluster")).arg(&target);
        let output = cp
            .output()
            .map_err(|e| ClusterError::io(Path::new("cp"), e))?;
        if !output.status.success() {
            return Err(command_error(&cp, output.status, &output.stderr));
        }
        let cluster = EmbeddedCluster::at(&target);
        cluster.replace_tls()?;
        // Not the template's port, which every copy would try first.
        cluster.set_port(free_port()?)?;
        cluster.start_on_chosen_port()?;
        Ok(TestCluster { cluster, _dir: dir })
    }
}

impl Drop for TestCluster {
    /// Immediate shutdown: the data is deleted next, so the shutdown checkpoint would be wasted.
    fn drop(&mut self) {
        let cluster = &self.cluster;
        if let Ok((binaries, user)) = cluster
            .initialized_state()
            .and_then(|state| cluster.server(&state))
        {
            let mut cmd = cluster.pg_ctl(&binaries, &user);
            cmd.args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = cmd.status();
        }
    }
}

impl EmbeddedCluster {
    /// A CA and server certificate of the copy's own, in place of the template's.
    fn replace_tls(&self) -> Result<(), ClusterError> {
        let data = self.data_dir();
        for path in [
            self.dir.join(CA_CERT),
            self.dir.join(CA_KEY),
            data.join(config::SERVER_CERT),
            data.join(config::SERVER_KEY),
        ] {
            fs::remove_file(&path).map_err(|e| ClusterError::io(&path, e))?;
        }
        let (_, user) = self.server(&self.initialized_state()?)?;
        self.write_tls(&user)
    }
}

/// The directory of this process's template, created on first use.
fn template() -> Result<&'static Path, ClusterError> {
    TEMPLATE
        .get_or_init(|| create_template().map_err(|e| chain(&e)))
        .as_deref()
        .map_err(|reason| ClusterError::State {
            path: std::env::temp_dir(),
            reason: format!("creating the test cluster template failed: {reason}"),
        })
}

fn create_template() -> Result<PathBuf, ClusterError> {
    remove_stale_templates();
    let tmp = std::env::temp_dir();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{TEMPLATE_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| ClusterError::io(&tmp, e))?
        .keep();
    extern "C" fn remove_template() {
        if let Some(Ok(dir)) = TEMPLATE.get() {
            let _ = fs::remove_dir_all(dir);
        }
    }
    // SAFETY: registers a plain function without arguments; it runs at process exit, after
    // the test harness is done, and only removes files.
    unsafe { nix::libc::atexit(remove_template) };
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| ClusterError::io(&dir, e))?;
    let options = ClusterOptions {
        port: None,
        fast: true,
    };
    EmbeddedCluster::at(&dir.join("cluster")).init(&options)?;
    Ok(dir)
}

/// `err` and its sources, for an error kept as text.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Deletes the templates of processes that are gone (killed before their `atexit`).
fn remove_stale_templates() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TEMPLATE_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// For a test that cannot run here (not root, no IPv6, …): fails it with `reason`, unless
/// [`ALLOW_SKIP_ENV`] is `1`, in which case it prints `reason` and the caller returns. A test
/// that passes without having checked anything would hide a broken guarantee.
pub fn skip_or_fail(reason: &str) {
    if std::env::var(ALLOW_SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("skipped ({ALLOW_SKIP_ENV}=1): {reason}");
        return;
    }
    panic!("this test cannot run here: {reason}; set {ALLOW_SKIP_ENV}=1 to skip it knowingly");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_taken_before_the_start_is_exchanged_for_a_free_one() {
        let tc = TestCluster::start().unwrap();
        let cluster = &tc.cluster;
        let port = cluster.port().unwrap();
        cluster.stop().unwrap();
        let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        cluster.start_on_chosen_port().unwrap();
        let moved = cluster.port().unwrap();
        assert_ne!(moved, port);
        assert!(cluster.status().unwrap().running);
        assert!(cluster
            .superuser_url()
            .unwrap()
            .contains(&format!(":{moved}/")));
        assert!(cluster
            .control_url()
            .unwrap()
            .contains(&format!("&port={moved}&")));
        drop(squatter);
    }

    #[test]
    fn the_template_is_made_once_and_stays_stopped() {
        let (a, b) = (TestCluster::start().unwrap(), TestCluster::start().unwrap());
        let template = EmbeddedCluster::at(&template().unwrap().join("cluster"));
        let status = template.status().unwrap();
        assert!(status.initialized && !status.running);
        for copy in [&a.cluster, &b.cluster] {
            assert!(copy.status().unwrap().running);
            assert_ne!(
                fs::read(copy.ca_cert_path()).unwrap(),
                fs::read(template.ca_cert_path()).unwrap()
            );
        }
    }
}
