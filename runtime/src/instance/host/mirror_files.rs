//! The mirror's view of the primary's read-write directories: a copy taken
//! when the attempt starts, so that the mirror sees the files as they were
//! then, not as the primary changes them while both run (a file the primary
//! writes must not appear to the mirror half-way, nor steer its road).
//!
//! A directory larger than [`MAX_COPY_BYTES`] is not copied: the mirror
//! then reads the live directory, as it did before copies, and the log
//! says so. Read-only grants need no copy: nobody changes them.

use crate::policy::{Access, Policy};
use std::path::{Path, PathBuf};

/// The most bytes of files copied for one attempt's mirror.
pub(crate) const MAX_COPY_BYTES: u64 = 64 << 20;

/// Copies of one attempt's read-write directories, removed with it.
#[derive(Debug)]
pub(crate) struct MirrorFiles {
    copies: Vec<(PathBuf, tempfile::TempDir)>,
}

/// The directories the primary may change: the ones the mirror reads a copy of.
fn writable(policy: &Policy) -> impl Iterator<Item = &Path> {
    policy.capabilities.files.iter().filter(|grant| grant.access == Access::ReadWrite).map(|grant| grant.host.as_path())
}

impl MirrorFiles {
    /// Whether the policy grants a read-write directory, so that there is
    /// something to copy.
    pub(crate) fn needed(policy: &Policy) -> bool {
        writable(policy).next().is_some()
    }

    /// Copies of the policy's read-write directories, or `None` when it
    /// grants none, or they could not be copied (then the mirror reads them
    /// live, and the reason is logged).
    pub(crate) fn copy(policy: &Policy) -> Option<Self> {
        let writable: Vec<&Path> = writable(policy).collect();
        if writable.is_empty() {
            return None;
        }
        let mut budget = MAX_COPY_BYTES;
        let mut copies = Vec::with_capacity(writable.len());
        for host in writable {
            let copied = tempfile::tempdir().and_then(|copy| copy_dir(host, copy.path(), &mut budget).map(|()| copy));
            match copied {
                Ok(copy) => copies.push((host.to_path_buf(), copy)),
                Err(error) => {
                    tracing::warn!(directory = %host.display(), %error,
                        "the mirror reads this directory live: it could not be copied");
                    return None;
                }
            }
        }
        Some(Self { copies })
    }

    /// Where the mirror sees the directory `host`, if it has a copy.
    pub(crate) fn view_of(&self, host: &Path) -> Option<&Path> {
        self.copies.iter().find(|(granted, _)| granted == host).map(|(_, copy)| copy.path())
    }
}

/// Copies the tree `from` into `to`, symlinks as symlinks, spending
/// `budget` bytes; an error past it.
fn copy_dir(from: &Path, to: &Path, budget: &mut u64) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if kind.is_dir() {
            std::fs::create_dir(&target)?;
            copy_dir(&source, &target, budget)?;
        } else {
            let size = entry.metadata()?.len();
            *budget = budget
                .checked_sub(size)
                .ok_or_else(|| std::io::Error::other(format!("larger than {MAX_COPY_BYTES} bytes")))?;
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_copied_within_its_budget() {
        let from = tempfile::tempdir().expect("a directory");
        std::fs::create_dir(from.path().join("d")).expect("mkdir");
        std::fs::write(from.path().join("d/a.txt"), b"abc").expect("write");
        let to = tempfile::tempdir().expect("a directory");
        let mut budget = 10;
        copy_dir(from.path(), to.path(), &mut budget).expect("copies");
        assert_eq!(std::fs::read(to.path().join("d/a.txt")).expect("copied"), b"abc");
        assert_eq!(budget, 7);
        let mut small = 2;
        let again = tempfile::tempdir().expect("a directory");
        assert!(copy_dir(from.path(), again.path(), &mut small).is_err(), "past the budget");
    }
}
