//! Where the audit spool keeps its files: a private directory, [`PRIVATE`], that the node
//! creates inside the configured path (`--audit-spool-dir`) with mode 0700, holding the
//! lock, the segments (mode 0600) and `dead/`. The configured path itself may belong to
//! someone else — a Kubernetes `emptyDir` or an `fsGroup` volume, a shared parent — so only
//! the private directory is checked: one found owned by another user, or that is not a
//! plain directory (a symlink), is refused at start-up, naming it; one of ours with a wider
//! mode is narrowed to 0700.
//!
//! Spools of older nodes kept their segments in the configured path itself: at start-up
//! [`adopt_old_layout`] moves them (and `dead/`) into the private directory, so a node
//! upgraded in place sends the events it had not yet delivered; a node on the default path
//! also adopts the spool of the old default, `$TMPDIR/warden-audit-spool-<node id>`, when
//! that directory is its own ([`adopt_previous_default`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Name of the private directory inside the configured spool path.
pub const PRIVATE: &str = "segments";

/// Why a spool directory is refused.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error(
        "audit spool directory {} is owned by uid {owner}, not by this process (uid {us}): refusing to use it",
        path.display()
    )]
    NotOurs { path: PathBuf, owner: u32, us: u32 },
    #[error("audit spool directory {} is not a plain directory (a symlink?): refusing to use it", .0.display())]
    NotADirectory(PathBuf),
    #[error("audit spool {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DirError + '_ {
    move |source| DirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates (if needed) and checks the private directory inside `configured`; returns it.
pub fn prepare(configured: &Path) -> Result<PathBuf, DirError> {
    fs::create_dir_all(configured).map_err(io_err(configured))?;
    let private = configured.join(PRIVATE);
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(&private) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(&private)(e)),
    }
    let meta = fs::symlink_metadata(&private).map_err(io_err(&private))?;
    if !meta.file_type().is_dir() {
        return Err(DirError::NotADirectory(private));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let us = rustix::process::geteuid().as_raw();
        if meta.uid() != us {
            return Err(DirError::NotOurs {
                path: private,
                owner: meta.uid(),
                us,
            });
        }
        if meta.mode() & 0o077 != 0 {
            fs::set_permissions(&private, fs::Permissions::from_mode(0o700))
                .map_err(io_err(&private))?;
        }
    }
    Ok(private)
}

/// Opens `path` for appending, creating it with mode 0600.
pub fn open_private_file(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Moves the segments (`*.seg`) and `dead/` an older node left in `configured` into
/// `private`, after the segments already there (ids renumbered on a clash, order kept);
/// returns how many segments moved. Call with the spool's lock held.
pub fn adopt_old_layout(configured: &Path, private: &Path) -> io::Result<usize> {
    let old = segment_ids(configured)?;
    if old.is_empty() && !configured.join("dead").is_dir() {
        return Ok(0);
    }
    let mut next = segment_ids(private)?.last().map_or(1, |id| id + 1);
    for id in &old {
        let from = configured.join(segment_name(*id));
        let mut to = private.join(segment_name(*id));
        if to.exists() || *id < next {
            to = private.join(segment_name(next));
        }
        next = next.max(parse_id(&to).unwrap_or(next)) + 1;
        fs::rename(&from, &to)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o600))?;
        }
    }
    let dead = configured.join("dead");
    if dead.is_dir() && !private.join("dead").exists() {
        fs::rename(&dead, private.join("dead"))?;
    }
    if !old.is_empty() {
        tracing::warn!(
            from = %configured.display(),
            to = %private.display(),
            segments = old.len(),
            "moved the audit spool of an older node into its private directory"
        );
    }
    Ok(old.len())
}

/// Adopts the segments of the spool older nodes kept by default in the temporary directory
/// (`old`), when that directory is this user's own and not writable by others — never one
/// another user planted there. Logs and carries on otherwise: the node still starts.
pub fn adopt_previous_default(old: &Path, private: &Path) {
    let Ok(meta) = fs::symlink_metadata(old) else {
        return; // nothing there
    };
    #[cfg(unix)]
    let ours = {
        use std::os::unix::fs::MetadataExt as _;
        meta.uid() == rustix::process::geteuid().as_raw() && meta.mode() & 0o022 == 0
    };
    #[cfg(not(unix))]
    let ours = true;
    if !meta.file_type().is_dir() || !ours {
        tracing::warn!(dir = %old.display(), "not adopting the audit spool of an older node at its old default path: not a private directory of this user");
        return;
    }
    if let Err(e) = adopt_old_layout(old, private) {
        tracing::error!(dir = %old.display(), error = %e, "could not move the audit spool of an older node from its old default path");
    }
}

fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

fn parse_id(path: &Path) -> Option<u64> {
    path.extension()
        .filter(|e| *e == "seg")
        .and(path.file_stem())
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse::<u64>().ok())
}

/// Segment ids in `dir`, ascending.
fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file()
            && let Some(id) = parse_id(&entry.path())
        {
            out.push(id);
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn private_directory_is_0700_and_narrowed_when_wider() {
        let dir = tempfile::tempdir().unwrap();
        let configured = dir.path().join("spool");
        let private = prepare(&configured).unwrap();
        assert_eq!(private, configured.join(PRIVATE));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&private), 0o700);
        fs::set_permissions(&private, fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&configured).unwrap();
        assert_eq!(mode(&private), 0o700);
        let f = open_private_file(&private.join("x.seg")).unwrap();
        drop(f);
        assert_eq!(mode(&private.join("x.seg")), 0o600);
    }

    #[test]
    fn a_symlink_in_place_of_the_private_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let configured = dir.path().join("spool");
        fs::create_dir(&configured).unwrap();
        std::os::unix::fs::symlink(&elsewhere, configured.join(PRIVATE)).unwrap();
        let err = prepare(&configured).unwrap_err();
        assert!(matches!(err, DirError::NotADirectory(_)), "{err}");
    }

    #[test]
    fn the_old_default_spool_is_adopted_only_when_it_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let private = prepare(&dir.path().join("new")).unwrap();
        let old = dir.path().join("old");
        fs::create_dir(&old).unwrap();
        fs::write(old.join(segment_name(7)), "old-7").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o777)).unwrap();
        adopt_previous_default(&old, &private);
        assert!(
            segment_ids(&private).unwrap().is_empty(),
            "world-writable: left"
        );
        fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
        adopt_previous_default(&old, &private);
        assert_eq!(segment_ids(&private).unwrap(), vec![7]);
        adopt_previous_default(&dir.path().join("absent"), &private);
    }

    #[test]
    fn old_segments_move_after_the_new_ones_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let configured = dir.path();
        let private = prepare(configured).unwrap();
        fs::write(private.join(segment_name(1)), "new-1").unwrap();
        fs::write(configured.join(segment_name(1)), "old-1").unwrap();
        fs::write(configured.join(segment_name(2)), "old-2").unwrap();
        fs::create_dir(configured.join("dead")).unwrap();
        fs::write(configured.join("dead").join("quarantine.jsonl"), "{}\n").unwrap();
        assert_eq!(adopt_old_layout(configured, &private).unwrap(), 2);
        assert_eq!(segment_ids(&private).unwrap(), vec![1, 2, 3]);
        assert_eq!(
            fs::read_to_string(private.join(segment_name(2))).unwrap(),
            "old-1"
        );
        assert_eq!(
            fs::read_to_string(private.join(segment_name(3))).unwrap(),
            "old-2"
        );
        assert!(private.join("dead").join("quarantine.jsonl").exists());
        assert!(segment_ids(configured).unwrap().is_empty());
        assert_eq!(adopt_old_layout(configured, &private).unwrap(), 0);
    }
}
