//! The servers a benchmark measures run as child processes of `tessera bench`, so that their CPU time and memory
//! can be read apart from the load generator's (from `/proc`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Of a server's complaints, this many are kept word for word; the count covers all.
const KEPT_COMPLAINTS: usize = 10;

/// A server started by the benchmark, stopped when dropped.
pub struct ChildServer {
    child: Child,
    pub http: SocketAddr,
    pub mqtt: Option<SocketAddr>,
    /// The API key printed at the first start, if this start printed one.
    pub api_key: Option<String>,
    /// The administrator's password printed at the first start, likewise.
    pub admin_password: Option<String>,
    /// Forwards the server's stderr to ours and notes its complaints, until the server's end.
    stderr: Option<JoinHandle<Complaints>>,
}

/// The lines a server logged at level ERROR, and its panics.
#[derive(Debug, Default, Clone)]
pub struct Complaints {
    pub count: u64,
    /// The first `KEPT_COMPLAINTS` of them.
    pub first: Vec<String>,
}

/// Copies the server's stderr to the benchmark's, line by line (bytes that are not UTF-8 shown replaced, so the
/// pipe is always drained), and answers the complaints among them once the server has closed it.
async fn forward_stderr(stderr: impl AsyncRead + Unpin) -> Complaints {
    let mut reader = BufReader::new(stderr);
    let mut complaints = Complaints::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return complaints,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        eprintln!("{text}");
        // The text format colours the level, so the word is looked for, not a column.
        if text.contains("ERROR") || text.contains("panicked") {
            complaints.count += 1;
            if complaints.first.len() < KEPT_COMPLAINTS {
                complaints.first.push(text.to_owned());
            }
        }
    }
}

impl ChildServer {
    /// Runs this executable with `args` and waits for the line that says where it listens.
    pub async fn start(args: &[&str], environment: &[(&str, &str)]) -> anyhow::Result<ChildServer> {
        let executable = std::env::current_exe().context("finding the tessera executable")?;
        let mut command = Command::new(executable);
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        command.env("RUST_LOG", "warn");
        for (name, value) in environment {
            command.env(name, value);
        }
        let mut child = command.spawn().context("starting a server")?;
        let stderr = child.stderr.take().map(|stderr| tokio::spawn(forward_stderr(stderr)));
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let (mut mqtt, mut api_key, mut admin_password) = (None, None, None);
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .context("the server did not say where it listens within 60 s")??;
            let Some(line) = line else { bail!("the server exited before listening") };
            if let Some(key) = line.trim().strip_prefix("API key:") {
                api_key = Some(key.trim().to_owned());
            } else if let Some(password) = line.trim().strip_prefix("admin password:") {
                admin_password = Some(password.trim().to_owned());
            } else if let Some(address) = line.strip_prefix("Tessera MQTT is listening on ") {
                mqtt = Some(address.parse()?);
            } else if let Some(address) = line
                .strip_prefix("Tessera is listening on http://")
                .or_else(|| line.strip_prefix("Baseline is listening on http://"))
            {
                // Keep draining stdout so the child never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return Ok(ChildServer { child, http: address.parse()?, mqtt, api_key, admin_password, stderr });
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// CPU seconds the process has used so far (user + system).
    pub fn cpu_seconds(&self) -> f64 {
        self.pid().map_or(0.0, cpu_seconds)
    }

    /// The process's peak resident memory so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.pid().map_or(0.0, peak_rss_mib)
    }

    /// The process's resident memory now, in KiB.
    pub fn rss_kib(&self) -> f64 {
        self.pid().map_or(0.0, rss_kib)
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to die; answers what it complained of in
    /// its life. Fails if it had already exited by itself, or died of something else.
    pub async fn kill(mut self) -> anyhow::Result<Complaints> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(status) = self.child.try_wait().context("asking whether the server still runs")? {
            bail!("the server exited by itself ({status}) before it was killed");
        }
        // `start_kill` is SIGKILL on Unix.
        self.child.start_kill().context("killing the server")?;
        let status = self.child.wait().await.context("waiting for the killed server")?;
        if status.signal() != Some(SIGKILL) {
            bail!("the server ended with {status}, not by SIGKILL");
        }
        let Some(stderr) = self.stderr.take() else { return Ok(Complaints::default()) };
        // The pipe closes with the process; the bound is for a descendant that might still hold it.
        let complaints = tokio::time::timeout(Duration::from_secs(5), stderr)
            .await
            .context("the killed server's stderr stayed open")?
            .context("forwarding the server's stderr")?;
        Ok(complaints)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// SIGKILL's number, which POSIX fixes at 9 (no `libc` dependency for one constant).
const SIGKILL: i32 = 9;

/// CPU seconds process `pid` has used so far (user + system).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may hold spaces, inside parentheses): utime and stime are the 12th and
    // 13th, in clock ticks (100 per second on Linux).
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|field| field.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Process `pid`'s peak resident memory so far, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM:") / 1024.0
}

/// Process `pid`'s resident memory now, in KiB.
pub fn rss_kib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:")
}

/// A figure of `/proc/<pid>/status` given in kB (0 if the process is gone).
fn status_kib(pid: u32, field: &str) -> f64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0.0 };
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0.0)
}

/// The pid of a running process named exactly `name` (the machine's Mosquitto, say).
pub fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let command = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        (command.trim() == name).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_and_panics_are_complaints_whatever_the_colours_and_bytes() {
        let logged: &[u8] = b"\x1b[33m WARN\x1b[0m slow statement\n\x1b[31mERROR\x1b[0m commit of readings failed\n\
            \xff\xfe not UTF-8\nthread 'tokio-runtime-worker' panicked at src/writer.rs:1:1\nlast line, no newline";
        let complaints = forward_stderr(logged).await;
        assert_eq!(complaints.count, 2, "{complaints:?}");
        assert!(complaints.first[0].contains("commit of readings failed"));
        assert!(complaints.first[1].contains("panicked"));
    }
}
