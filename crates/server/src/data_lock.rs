//! The lock a running server holds on its SQLite data directory, so that a second server, a restore or an
//! operator's command that must not run beside a server can tell that one is there, and say which.
//!
//! The lock is an advisory `flock` on `tessera.lock` in the directory (`std::fs::File::try_lock`): the kernel
//! releases it when the holder's process ends, however it ends (SIGKILL included), so a crash never leaves a stale
//! lock for an operator to delete by hand. The file also holds the holder's process id, written after the lock
//! is taken, for the message of whoever is turned away. A PostgreSQL store takes no such lock: its nodes share
//! the database by design and hear each other's changes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "tessera.lock";

/// A held lock on a data directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    path: PathBuf,
    _file: File,
}

impl DataDirLock {
    /// The lock file this lock holds.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}", held_message(path, *pid))]
    Held { path: PathBuf, pid: Option<u32> },
    #[error("cannot open the lock file {path}")]
    Io { path: PathBuf, source: io::Error },
}

fn held_message(path: &Path, pid: Option<u32>) -> String {
    let dir = path.parent().unwrap_or(path).display();
    match pid {
        Some(pid) => format!("a running Tessera server (process {pid}) holds the data directory {dir}"),
        None => format!("a running Tessera server holds the data directory {dir}"),
    }
}

/// How long a server waits for the lock before it is refused: an operator's question (`tessera status`) or a
/// short command may hold it a moment, and must not make a server's start fail.
const WAIT_FOR_LOCK: Duration = Duration::from_secs(3);

/// Takes the lock on `dir` (which must exist), waiting a moment for a brief holder, or says who holds it.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io_error = |source| LockError::Io { path: path.clone(), source };
    let mut file = open_lock_file(&path, true).map_err(io_error)?;
    let give_up = Instant::now() + WAIT_FOR_LOCK;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held { pid: read_pid(&mut file), path });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io_error(source)),
        }
    }
    let write_pid = |file: &mut File| -> io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_data()
    };
    write_pid(&mut file).map_err(io_error)?;
    Ok(DataDirLock { path, _file: file })
}

/// Whether a running server holds `dir`. Only asks: the file is opened for reading, never created or written,
/// and a shared lock taken for the instant of the question (a server's exclusive one refuses it).
pub fn held_by_server(dir: &Path) -> Result<(), LockError> {
    let path = dir.join(LOCK_FILE);
    let mut file = match open_lock_file(&path, false) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(LockError::Io { path, source }),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held { pid: read_pid(&mut file), path }),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io { path, source }),
    }
}

/// Opens the lock file without following a symbolic link (whoever can write the data directory could otherwise
/// point it at a file of root's, which the pid would overwrite when root runs a command), and only if it is a
/// regular file.
fn open_lock_file(path: &Path, to_hold: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    // Not truncated at open: the holder's pid must survive a loser's attempt.
    options.read(true).write(to_hold).create(to_hold).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_turned_away_naming_the_first_and_the_lock_goes_with_its_holder() {
        let dir = std::env::temp_dir().join(format!("tessera-lock-{}", crate::entropy::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = lock_data_dir(&dir).unwrap();
        let refused = lock_data_dir(&dir).unwrap_err();
        let message = refused.to_string();
        assert!(matches!(refused, LockError::Held { pid: Some(pid), .. } if pid == std::process::id()), "{message}");
        assert!(message.contains(&std::process::id().to_string()) && message.contains(&dir.display().to_string()));
        assert!(held_by_server(&dir).is_err(), "the question must see the holder");
        drop(held);
        held_by_server(&dir).expect("released with its holder");
        let asked = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(asked.trim(), std::process::id().to_string(), "the question writes nothing");
        let again = lock_data_dir(&dir).expect("free again");
        assert_eq!(again.path(), dir.join(LOCK_FILE));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_file_that_is_a_link_is_neither_followed_nor_written() {
        let dir = std::env::temp_dir().join(format!("tessera-lock-{}", crate::entropy::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "IMPORTANT\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(LOCK_FILE)).unwrap();
        assert!(matches!(lock_data_dir(&dir), Err(LockError::Io { .. })));
        assert!(matches!(held_by_server(&dir), Err(LockError::Io { .. })));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "IMPORTANT\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
