//! Files and directories only this user may read: the session's directories (0700, ours, never
//! a symlink), secrets and objects (0600, created exclusively, never through a symlink). Every
//! place Prism writes on a host goes through these, so another local user can neither read
//! what we write nor make us write into something they prepared.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Whether no process `pid` runs on this host any more: what it left (a session's
/// directories, a driver's socket) is then for others to sweep.
pub(crate) fn process_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// This process's effective user id.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Makes `path` a directory only this user can enter, or checks that the one there is such: a
/// real directory (not a symlink), owned by this user, with no access for group or others.
/// Its parent must exist.
pub(crate) fn private_dir(path: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(path)?;
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing {}: {why}", path.display()),
        ))
    };
    if !meta.file_type().is_dir() {
        return refuse("it is not a directory (a symlink or a file is there)".into());
    }
    if meta.uid() != euid() {
        return refuse(format!(
            "it belongs to uid {}, not to this user (uid {})",
            meta.uid(),
            euid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return refuse(format!(
            "its mode {:o} lets other users in (want 0700)",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// Like [`private_dir`], for every missing directory down to `path` (those that exist above
/// the last one are left as they are).
pub(crate) fn private_dir_all(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        private_dir_all(parent)?;
    }
    private_dir(path)
}

/// Options that create a file only this user can read (0600) and never follow a symlink at its
/// name; add `create_new` for secrets.
pub(crate) fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    options
}

/// Writes `bytes` to a new file at `path` that only this user can read: created exclusively
/// (a file already there, or a symlink, is an error, so nobody can have prepared it).
pub(crate) fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file: File = private_options().write(true).create_new(true).open(path)?;
    file.write_all(bytes)
}

/// Replaces the file at `path` with `bytes`, readable by this user alone: written to a fresh
/// private file beside it, then renamed over it (readers see the old or the new whole).
pub(crate) fn replace_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    write_new_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_dirs_and_files_refuse_what_others_could_have_prepared() {
        let base = std::env::temp_dir().join(format!("prism-files-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        private_dir_all(&base.join("a/b")).unwrap();
        for dir in [base.join("a"), base.join("a/b")] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        // An existing private directory is fine; an open one, a symlink or a file is not.
        private_dir(&base.join("a")).unwrap();
        std::fs::set_permissions(base.join("a"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(private_dir(&base.join("a")).is_err(), "mode 755");
        std::os::unix::fs::symlink(base.join("a/b"), base.join("link")).unwrap();
        assert!(private_dir(&base.join("link")).is_err(), "a symlink");
        // Secrets: 0600, never over an existing file or through a symlink.
        let secret = base.join("a/b/secret");
        write_new_private(&secret, b"s").unwrap();
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_new_private(&secret, b"t").is_err(), "exists");
        std::os::unix::fs::symlink(&secret, base.join("a/b/planted")).unwrap();
        assert!(write_new_private(&base.join("a/b/planted"), b"t").is_err());
        replace_private(&secret, b"new").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"new");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
