//! What the end-to-end benchmarks share: a `karst server` of this build, and the CPU time of
//! a process from `/proc`.

// Each benchmark uses part of this.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `karst server` of this build on free loopback ports, killed on drop.
pub struct Broker {
    pub child: Child,
    pub bootstrap: String,
}

impl Broker {
    /// Starts a broker with its data in `data`, `partitions` as `num.partitions` and the
    /// `extra` settings; returns once it accepts connections.
    pub fn start(data: &Path, partitions: i32, extra: &[&str]) -> Broker {
        let (port, admin) = (free_port(), free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_karst"));
        command
            .arg("server")
            .args(["--set", &format!("listeners=PLAINTEXT://127.0.0.1:{port}")])
            .args(["--set", &format!("log.dirs={}", data.display())])
            .args(["--set", &format!("admin.listener=127.0.0.1:{admin}")])
            .args(["--set", &format!("num.partitions={partitions}")]);
        for setting in extra {
            command.args(["--set", setting]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start karst");
        let bootstrap = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(&bootstrap).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "karst did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, bootstrap }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds a process has used so far (`/proc/PID/stat`, clock ticks of
/// 10 ms as on every Linux this runs on).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}
