//! A Mosquitto of the benchmark's own, for the fleet comparison: started on a free loopback port with a generated
//! configuration, a password file of the fleet's users (hashed by `mosquitto_passwd -U`) and an ACL file, so it
//! checks a password on every connect and an ACL on every publish and delivery, as Tessera checks tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
pub const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

/// Whether this machine can run the comparison (both programs are installed).
pub fn available() -> bool {
    Path::new(MOSQUITTO).is_file() && Path::new(MOSQUITTO_PASSWD).is_file()
}

/// A running Mosquitto, stopped when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    pub address: SocketAddr,
    pub log: PathBuf,
}

impl Mosquitto {
    /// Starts a Mosquitto in `dir` whose users are `users` (name, password) and whose ACL file is `acl`. Waits until
    /// it accepts connections.
    pub async fn start(dir: &Path, users: &[(&str, &str)], acl: &str) -> anyhow::Result<Mosquitto> {
        std::fs::create_dir_all(dir)?;
        let passwords = dir.join("passwords");
        let plain: String = users.iter().map(|(name, password)| format!("{name}:{password}\n")).collect();
        std::fs::write(&passwords, plain).context("writing Mosquitto's password file")?;
        let hashed = Command::new(MOSQUITTO_PASSWD)
            .arg("-U")
            .arg(&passwords)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .context("running mosquitto_passwd -U")?;
        if !hashed.status.success() {
            bail!("mosquitto_passwd -U failed: {}", String::from_utf8_lossy(&hashed.stderr));
        }
        let acl_file = dir.join("acl");
        std::fs::write(&acl_file, acl).context("writing Mosquitto's ACL file")?;
        // A port that was free a moment ago: Mosquitto cannot be asked for port 0 and say which it took.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let configuration = dir.join("mosquitto.conf");
        std::fs::write(
            &configuration,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
                 persistence false\nmax_connections -1\nlog_dest stderr\nlog_type error\nlog_type warning\n",
                passwords.display(),
                acl_file.display()
            ),
        )?;
        let log = dir.join("mosquitto.log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&configuration)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting mosquitto")?;
        let mut mosquitto = Mosquitto { child, address, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return Ok(mosquitto);
            }
            if let Some(status) = mosquitto.child.try_wait()? {
                let log = std::fs::read_to_string(&mosquitto.log).unwrap_or_default();
                bail!("mosquitto exited ({status}) before listening: {log}");
            }
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on {address} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
