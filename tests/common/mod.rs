//! Shared end-to-end harness: real `karst server` processes on free ports in temp dirs.
//!
//! Every end-to-end test starts its own broker with [`TestBroker::start`], so tests run in
//! parallel without sharing state. The broker's stderr and stdout go to files in its temp dir
//! (appended across restarts), and every failure to start prints them, because "the broker
//! did not come up" is useless without the broker's own words.
//!
//! Dropping a [`TestBroker`] kills the process; the temp dir goes with it. A test process that
//! dies without dropping it takes the broker down too (`PR_SET_PDEATHSIG`).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::fs::{File, OpenOptions};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to accept Kafka connections after it is spawned.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `terminate` waits for a clean exit after SIGTERM before giving up.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// How often the harness polls the port and the process while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A running `karst server` owned by one test.
pub struct TestBroker {
    child: Option<Child>,
    kafka_port: u16,
    admin_port: u16,
    settings: Vec<(String, String)>,
    root: tempfile::TempDir,
}

impl TestBroker {
    /// Starts a single-node broker on free ports with its data in a fresh temp dir.
    ///
    /// `extra_settings` are passed as `--set key=value` after the harness's own settings, so
    /// they may override them.
    pub fn start(extra_settings: &[(&str, &str)]) -> TestBroker {
        let root = tempfile::Builder::new()
            .prefix("karst-test-")
            .tempdir()
            .expect("create a temp dir for the broker");
        std::fs::create_dir_all(root.path().join("data")).expect("create the data dir");
        let mut broker = TestBroker {
            child: None,
            kafka_port: free_port(),
            admin_port: free_port(),
            settings: extra_settings
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            root,
        };
        broker.spawn();
        broker
    }

    /// `host:port` of the Kafka listener.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    /// `host:port` of the admin HTTP listener (`/metrics`, `/health`).
    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// The broker's `log.dirs`.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The broker's standard error so far (all runs, including before restarts).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// Kills the broker with SIGKILL (a crash: no shutdown code runs) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the broker to exit; returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the broker is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: plain kill(2) on the pid of a child we have not reaped yet, so the pid
        // cannot have been reused by another process.
        let result = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            result,
            0,
            "kill(SIGTERM) failed: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the broker") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Restarts the broker on the same ports and data dir (killing it first if it runs).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn stderr_path(&self) -> PathBuf {
        self.root.path().join("broker.stderr")
    }

    fn spawn(&mut self) {
        let stderr = append(&self.stderr_path());
        let stdout = append(&self.root.path().join("broker.stdout"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_karst"));
        command
            .arg("server")
            .args([
                "--set",
                &format!("listeners=PLAINTEXT://127.0.0.1:{}", self.kafka_port),
            ])
            .args(["--set", &format!("log.dirs={}", self.data_dir().display())])
            .args(["--set", &format!("admin.listener={}", self.admin_addr())]);
        for (key, value) in &self.settings {
            command.args(["--set", &format!("{key}={value}")]);
        }
        // If the test process dies without running Drop (a timeout's SIGKILL, a panic that
        // aborts), the kernel kills the broker too instead of leaving it orphaned. Linux sends
        // this signal when the spawning *thread* exits, so a broker must not outlive the test
        // thread that started (or restarted) it; a TestBroker never does in normal use.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = command
            .current_dir(self.root.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn karst server");
        self.child = Some(child);
        self.wait_until_listening();
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().expect("poll the broker") {
                self.child = None;
                panic!(
                    "broker exited during start-up with {status}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.kafka_port)).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "broker did not accept connections on {} within {STARTUP_TIMEOUT:?}\n--- stderr ---\n{}",
                    self.bootstrap(),
                    self.stderr()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago: bind port 0, read the port, release it.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|error| panic!("open {}: {error}", path.display()))
}
