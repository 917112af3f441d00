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
