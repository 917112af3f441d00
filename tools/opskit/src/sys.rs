//! Facts about this process and machine that several tools need: the
//! effective user, user and group names (from /etc/passwd and /etc/group,
//! as the C library's files backend reads them), the host name.

/// The effective user id.
#[allow(unsafe_code)]
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The id in field 3 of the `name` line of a passwd-format file.
fn id_of(file: &str, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
    })
}

/// The uid of a user name (or number).
pub fn uid_of(user: &str) -> Option<u32> {
    user.parse().ok().or_else(|| id_of("/etc/passwd", user))
}

/// The gid of a group name (or number).
pub fn gid_of(group: &str) -> Option<u32> {
    group.parse().ok().or_else(|| id_of("/etc/group", group))
}

/// The login name of a uid.
pub fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
    })
}

/// The home directory of a uid (passwd field 6).
pub fn home_dir(uid: u32) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 5 && f[2].parse() == Ok(uid)).then(|| f[5].into())
    })
}

/// This machine's host name.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}

/// `n` random bytes from the kernel, as lowercase hex: keys for psql's
/// `\restrict`, nonces in sealed files.
pub fn random_hex(n: usize) -> String {
    use std::fmt::Write as _;
    use std::io::Read as _;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("the kernel's random source /dev/urandom is readable");
    buf.iter().fold(String::with_capacity(2 * n), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `s` quoted for `sh -c` (single quotes, `'` as `'\''`).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A file system's space, as statvfs(2) gives it to an unprivileged user.
pub struct FsSpace {
    pub total: u64,
    /// Bytes this user may still write.
    pub avail: u64,
    pub files: u64,
    pub files_avail: u64,
}

/// The space of the file system holding `path`.
#[allow(unsafe_code)]
pub fn statvfs(path: &std::path::Path) -> std::io::Result<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `c` is a valid NUL-terminated string and `st` a zeroed
    // statvfs the call fills in; nothing is kept past the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok(FsSpace {
        total: st.f_blocks as u64 * frsize,
        avail: st.f_bavail as u64 * frsize,
        files: st.f_files as u64,
        files_avail: st.f_favail as u64,
    })
}

/// Ask process `pid` to stop (SIGTERM): a tool like pg_restore then stops
/// its own workers and cancels their queries, which SIGKILL would not.
pub fn terminate(pid: u32) -> std::io::Result<()> {
    send(pid, libc::SIGTERM)
}

/// The signals the tools send their children.
pub use libc::{SIGQUIT, SIGTERM};

/// Send signal `sig` to process `pid`.
#[allow(unsafe_code)]
pub fn send(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Have the child `cmd` starts receive `sig` (SIGTERM for a tool, SIGQUIT
/// for a postmaster: its immediate shutdown) when this process dies, even
/// by SIGKILL (Linux's `PR_SET_PDEATHSIG`): a `pg_restore` or
/// `pg_combinebackup` writing files, not a pipe, would otherwise go on
/// writing what nobody reads, and hold the space of a copy already
/// deleted. The signal follows the thread that spawns the child: spawn it
/// from the thread that waits for it.
#[allow(unsafe_code)]
pub fn end_with_parent(cmd: &mut std::process::Command, sig: libc::c_int) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: between fork and exec the closure makes only
    // async-signal-safe calls (prctl, getppid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Gone already, before prctl: the signal would never come.
            if u32::try_from(libc::getppid()) != Ok(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_numbers() {
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(gid_of("root"), Some(0));
        assert_eq!(uid_of("1234"), Some(1234));
        assert_eq!(uid_of("no-such-user-here"), None);
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(home_dir(0), Some("/root".into()));
    }
}
