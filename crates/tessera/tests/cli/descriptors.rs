//! A server that runs out of file descriptors: its listeners pause after a failed accept instead of spinning on
//! it, say so at most about once a second, and serve again as soon as clients leave (`accept.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::*;

/// The open-file limit the server is started with: room for its store and listeners, and a few dozen clients.
const OPEN_FILES: u32 = 96;

/// CPU seconds the process has used (user + system), from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// An MQTT 3.1.1 CONNECT with client id "c" and no credentials: any answer (a refusal included) shows the
/// listener accepted the connection and its session ran.
const CONNECT: [u8; 15] = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c'];

async fn mqtt_answers(address: &str) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        stream.write_all(&CONNECT).await.ok()?;
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).await.ok()?;
        (answer[0] == 0x20).then_some(())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt).await.ok().flatten().is_some()
}

#[tokio::test]
async fn out_of_descriptors_the_listeners_pause_log_rarely_and_serve_again_when_clients_leave() {
    let directory = tempfile::tempdir().unwrap();
    // prlimit(1) sets the limit and then executes tessera in its own process, so the pid is the server's.
    let mut child = launched(Command::new("prlimit"))
        .arg(format!("--nofile={OPEN_FILES}:{OPEN_FILES}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--data-dir"])
        .arg(directory.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("prlimit starts tessera (util-linux)");
    let pid = child.id().unwrap();
    let logged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
    let keeping = logged.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = errors.next_line().await {
            keeping.lock().unwrap().push(line);
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut mqtt = None;
    let http = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.unwrap().unwrap();
        let line = line.expect("tessera exited before listening");
        if let Some(address) = line.strip_prefix("Tessera MQTT is listening on ") {
            mqtt = Some(address.to_owned());
        }
        if let Some(address) = line.strip_prefix("Tessera is listening on ") {
            break address.to_owned();
        }
    };
    let mqtt = mqtt.expect("the MQTT listener's address");
    assert!(mqtt_answers(&mqtt).await, "MQTT serves before the descriptors run out");

    // Many more connections than the server has descriptors for: the kernel completes them all (the listen
    // queue), the server accepts until its accepts fail, and the rest wait in the queue.
    let mut clients = Vec::new();
    for _ in 0..(OPEN_FILES * 2) {
        clients.push(TcpStream::connect(&mqtt).await.unwrap());
    }
    let failing = |logged: &Arc<Mutex<Vec<String>>>| {
        logged.lock().unwrap().iter().filter(|line| line.contains("cannot accept connections")).count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while failing(&logged) == 0 {
        assert!(Instant::now() < deadline, "the server never reported failing accepts");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Out of descriptors for a while: the failed accepts cost next to no CPU and a line a second at most.
    let (cpu_before, lines_before, window) = (cpu_seconds(pid), failing(&logged), Duration::from_secs(3));
    tokio::time::sleep(window).await;
    let cpu = cpu_seconds(pid) - cpu_before;
    let lines = failing(&logged) - lines_before;
    assert!(cpu < 0.5, "{cpu:.2} s of CPU in {window:?} out of descriptors: the accept loop spins");
    assert!(lines <= 5, "{lines} lines about failed accepts in {window:?}: {:?}", logged.lock().unwrap());

    // The clients leave: both listeners serve again at once (the pause is at most a second).
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let healthy = reqwest::get(format!("{http}/healthz")).await.is_ok_and(|answer| answer.status() == 200);
        if healthy && mqtt_answers(&mqtt).await {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not serve again once the clients left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().await.unwrap();
}
