//! `su USER GROUP`: as root, a block's file operations run with that
//! effective user and group (so a log directory writable by others cannot
//! trick root into touching files elsewhere); scripts still run as root,
//! as logrotate runs them.

use opskit::sys::{gid_of, uid_of};

/// The switch, undone when dropped.
pub struct As {
    ids: Option<(u32, u32)>,
}

#[allow(unsafe_code)]
fn set(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: setegid/seteuid take plain integers; glibc applies them to
    // every thread of the process.
    unsafe {
        if libc::seteuid(0) != 0 || libc::setegid(gid) != 0 || libc::seteuid(uid) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl As {
    /// Switch to `su` when running as root; no-op otherwise.
    pub fn switch(su: Option<&(String, String)>, root: bool) -> Result<As, String> {
        let Some((user, group)) = su.filter(|_| root) else {
            return Ok(As { ids: None });
        };
        let uid = uid_of(user).ok_or_else(|| format!("su: unknown user '{user}'"))?;
        let gid = gid_of(group).ok_or_else(|| format!("su: unknown group '{group}'"))?;
        set(uid, gid).map_err(|e| format!("su {user} {group}: {e}"))?;
        Ok(As {
            ids: Some((uid, gid)),
        })
    }

    /// Run `f` as root again (scripts), then switch back.
    pub fn as_root<T>(&self, f: impl FnOnce() -> T) -> T {
        let Some((uid, gid)) = self.ids else {
            return f();
        };
        let _ = set(0, 0);
        let out = f();
        let _ = set(uid, gid);
        out
    }
}

impl Drop for As {
    fn drop(&mut self) {
        if self.ids.is_some() {
            let _ = set(0, 0);
        }
    }
}
