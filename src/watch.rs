//! Reload without a signal: watches the config file and the TLS files and
//! says when what they contain changed.
//!
//! This module owns noticing changes; it must never load, validate or apply
//! a config (the owner of the reload does that, exactly as for SIGHUP, see
//! `crate::reload`). It watches the *directories* holding the files, not the
//! files: Kubernetes updates a mounted ConfigMap or Secret by writing a new
//! `..2026_…` directory and atomically renaming the `..data` symlink the
//! visible files point through, so the files themselves are never written
//! and a watch on them (an inode) would go on watching the old version.
//! Events are debounced (an editor's save, a kubelet swap and cert-manager's
//! two files arrive as one), and a change is reported only when the content
//! of a watched file differs from what was last seen, so unrelated files in
//! the same directory (a shared `/tmp`, `..2026_…` directories coming and
//! going) never trigger a reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

/// Why the watch could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot start the file watcher: {0}")]
    Start(#[source] notify_debouncer_full::notify::Error),
    #[error("cannot watch {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: notify_debouncer_full::notify::Error,
    },
}

/// A running watch. Dropping it stops the watcher thread and closes the
/// channel [`Watch::changed`] reads.
pub struct Watch {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    rx: mpsc::Receiver<Vec<PathBuf>>,
}

impl Watch {
    /// Watch `files` (followed through symlinks) for content changes,
    /// reporting at most once per `debounce` of quiet.
    pub fn start(files: Vec<PathBuf>, debounce: Duration) -> Result<Self, WatchError> {
        // One pending report is enough: the reload reads the files again.
        let (tx, rx) = mpsc::channel(1);
        let mut seen = fingerprints(&files);
        let watched = files.clone();
        let mut debouncer = new_debouncer(debounce, None, move |r: DebounceEventResult| {
            if let Err(errors) = r {
                for e in errors {
                    tracing::warn!(error = %e, "config watch: error from the file watcher");
                }
                // Fall through: a fresh look at the files costs little.
            }
            let now = fingerprints(&watched);
            let changed: Vec<PathBuf> = watched
                .iter()
                .zip(now.iter().zip(seen.iter()))
                .filter(|(_, (a, b))| a != b)
                .map(|(p, _)| p.clone())
                .collect();
            if !changed.is_empty() {
                seen = now;
                // Full means a report is already pending: it covers this one.
                let _ = tx.try_send(changed);
            }
        })
        .map_err(WatchError::Start)?;
        for dir in directories(&files) {
            debouncer
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Dir {
                    dir: dir.clone(),
                    source,
                })?;
        }
        Ok(Self {
            _debouncer: debouncer,
            rx,
        })
    }

    /// The next change: the watched files whose content changed.
    pub async fn changed(&mut self) -> Option<Vec<PathBuf>> {
        self.rx.recv().await
    }
}

/// The directories to watch: each file's own directory (where a symlink
/// swap happens), and the directory its symlinks resolve to when that is
/// elsewhere (a file edited in place behind a plain symlink).
fn directories(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for f in files {
        let parent = |p: &Path| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let own = parent(f);
        if let Ok(real) = std::fs::canonicalize(f) {
            let real = parent(&real);
            let own_real = std::fs::canonicalize(&own).unwrap_or_else(|_| own.clone());
            // A kubelet `..2026_…` directory is replaced on every update;
            // the swap is seen in the file's own directory.
            if real != own_real && !real.starts_with(&own_real) {
                dirs.insert(real);
            }
        }
        dirs.insert(own);
    }
    dirs
}

/// A hash of each file's content (`None`: unreadable right now).
fn fingerprints(files: &[PathBuf]) -> Vec<Option<u64>> {
    files
        .iter()
        .map(|f| {
            std::fs::read(f)
                .ok()
                .map(|b| xxhash_rust::xxh3::xxh3_64(&b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_symlinked_file_is_watched_in_its_own_directory_and_where_it_points() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mount, elsewhere) = (dir.path().join("mount"), dir.path().join("elsewhere"));
        std::fs::create_dir_all(mount.join("..2026_01")).expect("mkdir");
        std::fs::create_dir_all(&elsewhere).expect("mkdir");
        std::fs::write(mount.join("..2026_01/config.toml"), "a").expect("write");
        std::os::unix::fs::symlink("..2026_01", mount.join("..data")).expect("link");
        std::os::unix::fs::symlink("..data/config.toml", mount.join("config.toml")).expect("link");
        std::fs::write(elsewhere.join("cert.pem"), "c").expect("write");
        std::os::unix::fs::symlink(elsewhere.join("cert.pem"), mount.join("cert.pem"))
            .expect("link");
        let dirs = directories(&[mount.join("config.toml"), mount.join("cert.pem")]);
        let real = |p: &Path| std::fs::canonicalize(p).expect("canonical");
        assert_eq!(
            dirs,
            BTreeSet::from([mount.clone(), real(&elsewhere)]),
            "the kubelet's ..2026_01 is not watched itself"
        );
    }
}
