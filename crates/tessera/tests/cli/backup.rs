//! Issue 16: `tessera backup` of a running store and `tessera restore`, as an operator runs them, with the exit
//! codes scripts rely on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Value, json};
use sqlx::Connection;

use super::{Serving, printed_value, tessera};

/// `tessera serve` on `data_dir`, account tokens unthrottled: the senders below share one.
async fn start_server(data_dir: &Path) -> Serving {
    super::serve_with(&[
        "--rate-limit-account".as_ref(),
        "unlimited".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ])
    .await
}

/// A Ubidots account token for the API key (`POST /api/v1.6/auth/token`).
async fn account_token(client: &reqwest::Client, base: &str, api_key: &str) -> reqwest::Result<reqwest::Response> {
    client.post(format!("{base}/api/v1.6/auth/token")).header("x-ubidots-apikey", api_key).send().await
}

async fn run(arguments: &[&str], paths: &[&Path]) -> Output {
    let mut command = tessera();
    command.args(arguments);
    for path in paths {
        command.arg(path);
    }
    command.output().await.unwrap()
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn backup(data_dir: &Path, to: &Path) -> Output {
    let output = tessera().args(["backup", "--data-dir"]).arg(data_dir).arg("--to").arg(to).output().await.unwrap();
    assert!(output.status.success(), "backup: {}", stderr(&output));
    output
}

/// Every file under `dir` with its bytes, to show a refused restore changed nothing (the lock file aside: taking
/// the lock rewrites the holder's process id).
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.map(Result::unwrap) {
        let path = entry.path();
        if path.file_name().is_some_and(|name| name == "tessera.lock") {
            continue;
        }
        if path.is_dir() {
            found.extend(contents(&path));
        } else {
            found.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    found
}

fn replaced_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("replaced-"))
        .collect()
}

/// The point of a backup: one taken while devices send holds every reading acknowledged before it began, and the
/// tokens in use work against the restored store (the key came along).
#[tokio::test]
async fn a_backup_taken_under_ingest_restores_every_reading_acknowledged_before_it_began() {
    let directory = tempfile::tempdir().unwrap();
    let (original_dir, restored_dir) = (directory.path().join("original"), directory.path().join("restored"));
    let backup_file = directory.path().join("nightly.tessera-backup");
    let mut original = start_server(&original_dir).await;
    let api_key = printed_value(&original.printed, "API key:").unwrap();
    let client = reqwest::Client::new();
    let token: Value = account_token(&client, &original.base, &api_key).await.unwrap().json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();

    // Six senders, each with its own device and increasing timestamps, noting when each reading was acknowledged.
    const SENDERS: usize = 6;
    const MOST_PER_SENDER: i64 = 1000; // one page of the Ubidots values listing
    let stop = Arc::new(AtomicBool::new(false));
    let (acknowledged_sender, mut acknowledged) = tokio::sync::mpsc::unbounded_channel::<(usize, i64, Instant)>();
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..SENDERS {
        let (client, token, stop) = (client.clone(), token.clone(), stop.clone());
        let url = format!("{}/api/v1.6/devices/backup-{sender}", original.base);
        let acknowledged = acknowledged_sender.clone();
        senders.spawn(async move {
            for timestamp in 1..=MOST_PER_SENDER {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let body = json!({"v": {"value": timestamp, "timestamp": timestamp}});
                let response = client.post(&url).header("x-auth-token", &token).json(&body).send().await.unwrap();
                let answer: Value = response.json().await.unwrap();
                assert_eq!(answer["v"][0]["status_code"], 201, "{answer}");
                acknowledged.send((sender, timestamp, Instant::now())).unwrap();
            }
        });
    }
    drop(acknowledged_sender);
    let mut received = Vec::new();
    while received.len() < 300 {
        received.push(acknowledged.recv().await.expect("readings are acknowledged"));
    }

    let backup_began = Instant::now();
    let output = backup(&original_dir, &backup_file).await;
    let backup_ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    while let Some(sender) = senders.join_next().await {
        sender.unwrap();
    }
    while let Ok(late) = acknowledged.try_recv() {
        received.push(late);
    }
    assert!(String::from_utf8_lossy(&output.stdout).contains("with its server key"));
    let during = received.iter().filter(|(_, _, at)| (backup_began..backup_ended).contains(at)).count();
    assert!(
        during > 0,
        "ingest went on during the backup (nothing was acknowledged in its {:?})",
        backup_ended - backup_began
    );
    #[cfg(unix)]
    {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&backup_file).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "the backup holds the server key");
    }
    original.child.kill().await.unwrap();

    let restored = tessera()
        .args(["restore", "--from"])
        .arg(&backup_file)
        .arg("--data-dir")
        .arg(&restored_dir)
        .output()
        .await
        .unwrap();
    assert!(restored.status.success(), "restore: {}", stderr(&restored));
    #[cfg(unix)]
    {
        let key = std::fs::metadata(restored_dir.join("server.key")).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777, 0o600);
    }
    let mut serving = start_server(&restored_dir).await;
    assert!(printed_value(&serving.printed, "API key:").is_none(), "the restored store has its account");
    let mut before_backup = 0;
    for sender in 0..SENDERS {
        let url = format!("{}/api/v1.6/devices/backup-{sender}/v/values?page_size=1000", serving.base);
        // The token from the original server: its digest is checked under the restored key.
        let values = client.get(&url).header("x-auth-token", &token).send().await.unwrap();
        assert_eq!(values.status(), 200, "the old token works against the restored store");
        let values: Value = values.json().await.unwrap();
        let stored: BTreeSet<i64> = values["results"]
            .as_array()
            .map(|results| results.iter().map(|dot| dot["timestamp"].as_i64().unwrap()).collect())
            .unwrap_or_default();
        for (_, timestamp, _) in received.iter().filter(|(s, _, at)| *s == sender && *at < backup_began) {
            assert!(
                stored.contains(timestamp),
                "device {sender}: reading {timestamp}, acknowledged before the backup, was lost"
            );
            before_backup += 1;
        }
    }
    assert!(before_backup >= 300);
    let exchanged = account_token(&client, &serving.base, &api_key).await.unwrap();
    assert_eq!(exchanged.status(), 201, "the API key works against the restored store");
    serving.child.kill().await.unwrap();
}

#[tokio::test]
async fn restore_refuses_while_a_server_holds_the_directory_naming_it() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("data");
    let backup_file = directory.path().join("backup");
    let mut serving = start_server(&data_dir).await;
    let pid = serving.child.id().unwrap();
    backup(&data_dir, &backup_file).await;
    let before = contents(&data_dir);
    let refused = run(&["restore", "--force", "--from"], &[&backup_file, Path::new("--data-dir"), &data_dir]).await;
    assert_eq!(code(&refused), Some(4), "{}", stderr(&refused));
    assert!(stderr(&refused).contains(&format!("a running Tessera server (process {pid}) holds the data directory")));
    assert!(replaced_dirs(&data_dir).is_empty());
    // The server goes on serving what it had; its WAL may have moved on meanwhile, its database and key not.
    let after = contents(&data_dir);
    for file in ["tessera.db", "server.key"] {
        assert_eq!(before.get(&data_dir.join(file)).map(Vec::len), after.get(&data_dir.join(file)).map(Vec::len));
    }
    assert_eq!(after[&data_dir.join("server.key")], before[&data_dir.join("server.key")]);
    assert!(reqwest::get(format!("{}/healthz", serving.base)).await.unwrap().status().is_success());
    serving.child.kill().await.unwrap();
}

/// Bad files, each refused with exit code 6 and its reason named, the target's store untouched even with --force.
#[tokio::test]
async fn restore_refuses_a_file_that_is_not_a_tessera_backup_and_leaves_the_target_untouched() {
    let directory = tempfile::tempdir().unwrap();
    let source_dir = directory.path().join("source");
    let target_dir = directory.path().join("target");
    for dir in [&source_dir, &target_dir] {
        assert!(run(&["init", "--json", "--data-dir"], &[dir]).await.status.success());
    }
    let good = directory.path().join("good");
    backup(&source_dir, &good).await;

    let random = directory.path().join("random");
    let noise: Vec<u8> = (0..40_000u32).map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&random, noise).unwrap();
    let empty = directory.path().join("empty");
    std::fs::write(&empty, b"").unwrap();

    let plain = directory.path().join("plain.sqlite");
    let url = format!("sqlite://{}?mode=rwc", plain.display());
    let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE notes (body TEXT)").execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();

    let database_alone = directory.path().join("tessera.db copied alone");
    std::fs::copy(source_dir.join("tessera.db"), &database_alone).unwrap();

    let edited = |name: &str, statement: &'static str| {
        let path = directory.path().join(name);
        std::fs::copy(&good, &path).unwrap();
        async move {
            let url = format!("sqlite://{}", path.display());
            let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(statement).execute(&mut connection).await.unwrap();
            connection.close().await.unwrap();
            path
        }
    };
    let newer = edited(
        "newer",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, x'00', 0)",
    )
    .await;
    let short_key = edited("short key", "UPDATE shared_secrets SET value = x'0102' WHERE name = 'server_key'").await;
    let trigger =
        edited("trigger", "CREATE TRIGGER keep_the_key BEFORE DELETE ON shared_secrets BEGIN SELECT 1; END").await;
    let truncated = directory.path().join("truncated");
    let whole = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();

    let before = contents(&target_dir);
    for (file, reason) in [
        (&random, "it is not a SQLite database"),
        (&empty, "it is not a SQLite database"),
        (&plain, "not Tessera's"),
        (&database_alone, "holds no server key"),
        (&newer, "made by a newer Tessera (its migration 9999, \"from the future\""),
        (&short_key, "has 2 bytes, not 32"),
        (&trigger, "it holds trigger keep_the_key, which Tessera's schema has none of"),
        (&truncated, "damaged"),
    ] {
        let refused = run(&["restore", "--force", "--from"], &[file, Path::new("--data-dir"), &target_dir]).await;
        let message = stderr(&refused);
        assert_eq!(code(&refused), Some(6), "{}: {message}", file.display());
        assert!(message.contains(reason) && message.contains("nothing was changed"), "{}: {message}", file.display());
        assert_eq!(contents(&target_dir), before, "{}: the target was touched", file.display());
    }
    let missing =
        run(&["restore", "--from"], &[&directory.path().join("nowhere"), Path::new("--data-dir"), &target_dir]).await;
    assert_eq!(code(&missing), Some(3), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("there is no backup file"));
    assert!(!directory.path().join("fresh").exists());
    let fresh = run(&["restore", "--from"], &[&random, Path::new("--data-dir"), &directory.path().join("fresh")]).await;
    assert_eq!(code(&fresh), Some(6));
    assert!(!directory.path().join("fresh").exists(), "a refused restore does not even create the data directory");
}

#[tokio::test]
async fn restore_refuses_an_existing_store_without_force_and_keeps_it_aside_with_force() {
    let directory = tempfile::tempdir().unwrap();
    let (source_dir, target_dir) = (directory.path().join("source"), directory.path().join("target"));
    let credentials = |output: Output| -> Value {
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let source = credentials(run(&["init", "--json", "--data-dir"], &[&source_dir]).await);
    let target = credentials(run(&["init", "--json", "--data-dir"], &[&target_dir]).await);
    let backup_file = directory.path().join("backup");
    backup(&source_dir, &backup_file).await;

    let before = contents(&target_dir);
    let refused = run(&["restore", "--from"], &[&backup_file, Path::new("--data-dir"), &target_dir]).await;
    assert_eq!(code(&refused), Some(7), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("already holds a store") && stderr(&refused).contains("--force"));
    assert_eq!(contents(&target_dir), before);

    let forced = run(&["restore", "--force", "--from"], &[&backup_file, Path::new("--data-dir"), &target_dir]).await;
    assert!(forced.status.success(), "{}", stderr(&forced));
    let [aside] = replaced_dirs(&target_dir).try_into().unwrap();
    assert!(String::from_utf8_lossy(&forced.stdout).contains(&aside.display().to_string()), "the output says where");
    for file in ["tessera.db", "server.key"] {
        assert_eq!(before[&target_dir.join(file)], std::fs::read(aside.join(file)).unwrap(), "{file} kept as it was");
    }

    // The target now answers to the source's API key, and what was replaced still to its own, served from aside.
    let client = reqwest::Client::new();
    let mut restored = start_server(&target_dir).await;
    let exchange = |base: &str, credentials: &Value| {
        let (client, base) = (client.clone(), base.to_owned());
        let api_key = credentials["api_key"].as_str().unwrap().to_owned();
        async move { account_token(&client, &base, &api_key).await.unwrap().status() }
    };
    assert_eq!(exchange(&restored.base, &source).await, 201);
    assert_eq!(exchange(&restored.base, &target).await, 401);
    restored.child.kill().await.unwrap();
    let mut kept = start_server(&aside).await;
    assert_eq!(exchange(&kept.base, &target).await, 201);
    kept.child.kill().await.unwrap();
}

#[tokio::test]
async fn backup_refusals_have_their_exit_codes() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("data");
    assert!(run(&["init", "--data-dir"], &[&data_dir]).await.status.success());
    let backup_file = directory.path().join("backup");
    backup(&data_dir, &backup_file).await;
    let first = std::fs::read(&backup_file).unwrap();

    let again = run(&["backup", "--data-dir"], &[&data_dir, Path::new("--to"), &backup_file]).await;
    assert_eq!(code(&again), Some(7), "{}", stderr(&again));
    assert!(stderr(&again).contains("exists already; give --force"));
    assert_eq!(std::fs::read(&backup_file).unwrap(), first);
    let forced = run(&["backup", "--force", "--data-dir"], &[&data_dir, Path::new("--to"), &backup_file]).await;
    assert!(forced.status.success(), "{}", stderr(&forced));

    let onto =
        run(&["backup", "--force", "--data-dir"], &[&data_dir, Path::new("--to"), &data_dir.join("tessera.db")]).await;
    assert_eq!(code(&onto), Some(2), "{}", stderr(&onto));
    assert!(stderr(&onto).contains("names a file of the store itself"));

    let into_a_directory = run(&["backup", "--data-dir"], &[&data_dir, Path::new("--to"), directory.path()]).await;
    assert_eq!(code(&into_a_directory), Some(2), "{}", stderr(&into_a_directory));
    assert!(stderr(&into_a_directory).contains("is a directory; name the backup file"));

    let nothing =
        run(&["backup", "--data-dir"], &[&directory.path().join("none"), Path::new("--to"), &backup_file]).await;
    assert_eq!(code(&nothing), Some(3), "{}", stderr(&nothing));
    assert!(stderr(&nothing).contains("there is no store at"));

    let postgres = tessera()
        .args(["backup", "--database-url", "postgres://tessera:hunter2@db.example/tessera", "--to"])
        .arg(&backup_file)
        .output()
        .await
        .unwrap();
    assert_eq!(code(&postgres), Some(8), "{}", stderr(&postgres));
    assert!(stderr(&postgres).contains("pg_dump") && !stderr(&postgres).contains("hunter2"), "{}", stderr(&postgres));
    let postgres = tessera()
        .args(["restore", "--database-url", "postgres://tessera@db.example/tessera", "--from"])
        .arg(&backup_file)
        .output()
        .await
        .unwrap();
    assert_eq!(code(&postgres), Some(8), "{}", stderr(&postgres));
    assert!(stderr(&postgres).contains("pg_restore"));

    let help = run(&["restore", "--help"], &[]).await;
    assert!(String::from_utf8_lossy(&help.stdout).contains("7  the target exists"));
    // No partial file is left behind by any of this.
    let leftovers: Vec<_> = std::fs::read_dir(directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_backup_goes_to_the_file_named_even_when_its_name_reads_as_a_uri() {
    // SQLite reads a name beginning `file:` as a URI: `file:x/b` once sent the copy (key included, mode 0644) to
    // `x/b`, and checked the empty file it had been given.
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("data");
    assert!(run(&["init", "--data-dir"], &[&data_dir]).await.status.success());
    std::fs::create_dir_all(directory.path().join("file:x")).unwrap();
    std::fs::create_dir_all(directory.path().join("x")).unwrap();
    let output = tessera()
        .current_dir(directory.path())
        .args(["backup", "--data-dir"])
        .arg(&data_dir)
        .args(["--to", "file:x/b.bak"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let written = directory.path().join("file:x/b.bak");
    assert!(std::fs::read(&written).unwrap().starts_with(b"SQLite format 3\0"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&written).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(std::fs::read_dir(directory.path().join("x")).unwrap().count(), 0, "nothing written elsewhere");
}
