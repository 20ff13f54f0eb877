//! Process plumbing shared by the servers: finding binaries, picking ports,
//! signalling and reaping children, reading logs.

use std::{
    fs,
    io::{self, Read, Seek, SeekFrom},
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal};

/// How often start-up and shutdown are polled.
pub(crate) const POLL: Duration = Duration::from_millis(10);

/// Looks `name` up in `PATH`, then in `extra` directories.
pub(crate) fn find_binary(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The directories searched besides `PATH`, for error messages.
pub(crate) fn describe_search(extra: &[&str]) -> String {
    let mut places = vec!["PATH".to_owned()];
    places.extend(extra.iter().map(|s| (*s).to_owned()));
    places.join(", ")
}

/// A loopback port that was free a moment ago.
///
/// Another process can take it before the server binds it; callers retry
/// start-up with a fresh port when the server reports the address in use.
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Sends `signal` to the child, ignoring a child that is already gone.
pub(crate) fn signal(child: &Child, signal: Signal) {
    let Ok(raw) = i32::try_from(child.id()) else {
        return;
    };
    if let Some(pid) = Pid::from_raw(raw) {
        // ESRCH only means the process already exited; it is reaped by `wait_for`.
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Waits up to `timeout` for the child to exit.
pub(crate) fn wait_for(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

/// Asks the child to stop with `graceful`, and kills it if it has not exited
/// after `grace`. Always reaps it.
pub(crate) fn shut_down(child: &mut Child, graceful: Signal, grace: Duration) -> io::Result<()> {
    signal(child, graceful);
    if wait_for(child, grace)?.is_none() {
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}

/// The last `lines` lines that a log file gained after byte offset `from`
/// (at most its last 16 KiB are read).
pub(crate) fn log_tail(path: &Path, from: u64, lines: usize) -> String {
    const MAX: u64 = 16 * 1024;
    let Ok(mut file) = fs::File::open(path) else {
        return "(no log)".to_owned();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX).max(from)));
    let mut text = String::new();
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_ok() {
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The user a server that refuses to run as root is started as: `None` when
/// this process is not root, else the first of `candidates` in `/etc/passwd`.
pub(crate) fn unprivileged_user(candidates: &[&str]) -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    candidates.iter().find_map(|wanted| {
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            (name == *wanted).then_some((uid, gid))
        })
    })
}

/// Gives `path` and everything below it to `uid:gid`.
pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
