//! A client script (paho-mqtt, aiocoap, ...) running beside a test: its output lines as they
//! come, with bounded waits, and stdin held open until [`Script::finish`] (what ends a script
//! that holds a connection).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a wait for a line lasts before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running client script. Killed when dropped.
pub struct Script {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages and for lines that arrived in another order.
    pub seen: Vec<String>,
    /// Lines that end the scenario early: waiting past one of them fails at once.
    fatal: Vec<String>,
}

impl Script {
    /// Spawns `command` with piped stdin and stdout; a line starting with one of `fatal` while
    /// waiting for another fails the wait.
    pub fn spawn(mut command: Command, fatal: &[&str]) -> Script {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawning the client script");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let fatal = fatal.iter().map(|s| s.to_string()).collect();
        Script { stdin: child.stdin.take(), child, lines, seen: Vec::new(), fatal }
    }

    /// The next line starting with `prefix`; a fatal line, or no such line within [`PATIENCE`],
    /// fails.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
                panic!("no line starting with {prefix:?} within {PATIENCE:?}; seen {:?}", self.seen);
            };
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return line;
            }
            let fatal = self.fatal.iter().any(|p| line.starts_with(p.as_str()));
            assert!(!fatal, "{line:?} while waiting for {prefix:?}; seen {:?}", self.seen);
        }
    }

    /// Closes stdin and returns the lines that follow until the script ends.
    pub fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            rest.push(line);
        }
        rest
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
