//! The durable outbox: `<state>/xdr/outbox/<id>.json`, one file per detection to deliver.
//!
//! A detection is written here (write to a temporary file, rename) by `fire`, on the tailing
//! thread, *before* the delivery task first tries it, and removed only when XDR has confirmed
//! every entity of it (`created` or `exists`). The files are fsynced in `flush`, which the
//! tailer calls before each checkpoint, so an offset never moves past a detection that is
//! neither delivered nor durably queued. After a crash or restart, [`Outbox::open`] returns
//! what is still pending and delivery resumes.
//!
//! Files are named after the sighting's external id, so a detection replayed after a crash
//! overwrites its own pending entry instead of adding a second one. Entries XDR rejects for
//! good (a validation error) move to `failed/` with the service's message, for a human.
//!
//! Incident updates live next to it, in `<state>/xdr/patches/`: one [`Patch`] per incident,
//! replaced by each later detection of the incident, fsynced with the entries.
//!
//! The queue is bounded by `max_pending` (counted in [`Outbox::pending`]); the caller decides
//! what to do when it is full (see the action).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::write_atomic;

/// One pending delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// File stem (hash of the sighting's external id).
    pub id: String,
    /// Order of creation (delivery goes oldest first).
    pub seq: u64,
    pub rule: String,
    /// When the detection was queued (UTC).
    pub queued_at: String,
    /// The validated bundle.
    pub bundle: Value,
}

/// The pending update of one existing incident: a PATCH rendered from the latest aggregate.
///
/// One file per incident (`<state>/xdr/patches/<sha256 of its id>.json`), overwritten by every
/// later detection of the incident: however many detections join it, one PATCH carries the
/// newest state. It is removed only once XDR has applied it, and only if no newer one replaced
/// it meanwhile ([`Outbox::remove_patch`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    /// The incident's transient id (`transient:<external id>`).
    pub incident: String,
    /// `seq` of the detection that rendered it.
    pub seq: u64,
    pub rule: String,
    pub queued_at: String,
    /// The PATCH body.
    pub body: Value,
    /// The whole incident rendered from the same aggregate, and the bundle's `source`: when
    /// the incident's stored id is not known (forgotten, or its sightings failed), importing
    /// it alone is answered `exists` with the id.
    pub entity: Value,
    pub source: String,
}

pub struct Outbox {
    dir: PathBuf,
    patches: PathBuf,
    failed: PathBuf,
    /// Serialises writing and conditional removal of patch files (the reading thread
    /// replaces them while the delivery task removes them).
    patch_lock: std::sync::Mutex<()>,
    /// Entries on disk, not yet confirmed.
    pending: Arc<AtomicUsize>,
    seq: AtomicU64,
    /// Written since the last `sync`.
    unsynced: std::sync::Mutex<Vec<PathBuf>>,
}

impl Outbox {
    /// Opens (creating) the outbox under `state` and returns the entries still pending, oldest
    /// first. Leftover temporary files of an interrupted write are removed.
    pub fn open(state: &Path) -> std::io::Result<(Outbox, Vec<Entry>)> {
        let dir = state.join("outbox");
        let patches = state.join("patches");
        let failed = state.join("failed");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&patches)?;
        let entries = read_entries(&dir, Some(&failed))?;
        let next = entries.last().map_or(0, |e| e.seq + 1);
        let ob = Outbox {
            dir,
            patches,
            failed,
            patch_lock: Default::default(),
            pending: Arc::new(AtomicUsize::new(entries.len())),
            seq: AtomicU64::new(next.max(now_seq_base())),
            unsynced: Default::default(),
        };
        Ok((ob, entries))
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Entries on disk, not yet confirmed.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Persists `e`. Returns false when an entry of that id was already pending (a replay):
    /// it is replaced, not added.
    pub fn put(&self, e: &Entry) -> std::io::Result<bool> {
        let p = self.path(&e.id);
        let existed = p.exists();
        write_atomic(&p, &serde_json::to_vec(e)?, false)?;
        if !existed {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        self.unsynced.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        Ok(!existed)
    }

    /// Makes every `put` so far durable (data and directory).
    pub fn sync(&self) -> std::io::Result<()> {
        let files = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|e| e.into_inner()));
        if files.is_empty() {
            return Ok(());
        }
        for p in files {
            // Already delivered and removed: nothing to make durable.
            if let Ok(f) = File::open(&p) {
                f.sync_data()?;
            }
        }
        File::open(&self.dir)?.sync_all()?;
        File::open(&self.patches)?.sync_all()
    }

    fn patch_path(&self, incident: &str) -> PathBuf {
        self.patches.join(format!("{}.json", super::aggregate::sha256_hex(incident.as_bytes())))
    }

    /// Persists `p`, replacing the pending PATCH of its incident (coalescing: the newest
    /// aggregate wins). Durable after the next [`Outbox::sync`].
    pub fn put_patch(&self, p: &Patch) -> std::io::Result<()> {
        let path = self.patch_path(&p.incident);
        let _g = self.patch_lock.lock().unwrap_or_else(|e| e.into_inner());
        write_atomic(&path, &serde_json::to_vec(p)?, false)?;
        self.unsynced.lock().unwrap_or_else(|e| e.into_inner()).push(path);
        Ok(())
    }

    /// Applied by XDR: removes the incident's PATCH if it is still the one of `seq`. Returns
    /// false when a newer one replaced it (it stays, to be sent in turn).
    pub fn remove_patch(&self, incident: &str, seq: u64) -> bool {
        let path = self.patch_path(incident);
        let _g = self.patch_lock.lock().unwrap_or_else(|e| e.into_inner());
        let on_disk = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Patch>(&b).ok());
        match on_disk {
            Some(p) if p.seq != seq => false,
            _ => {
                let _ = std::fs::remove_file(&path);
                true
            }
        }
    }

    /// The pending PATCHes on disk (at start). Unreadable files are removed: a PATCH only
    /// repeats what the next detection of the incident renders again.
    pub fn pending_patches(&self) -> std::io::Result<Vec<Patch>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.patches)? {
            let p = e?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".json") {
                if name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(&p);
                }
                continue;
            }
            match std::fs::read(&p).ok().and_then(|b| serde_json::from_slice::<Patch>(&b).ok()) {
                Some(x) => out.push(x),
                None => {
                    tracing::warn!(path = %p.display(), "unreadable pending XDR incident update; removed");
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        out.sort_by_key(|p| p.seq);
        Ok(out)
    }

    /// Every entry now on disk (oldest first), recounting [`Outbox::pending`]: picks up entries
    /// put back by `trapline xdr failed --requeue` while trapline runs. Handing an entry that
    /// is already queued to the delivery task again is harmless: it replaces its twin.
    pub fn rescan(&self) -> std::io::Result<Vec<Entry>> {
        let entries = read_entries(&self.dir, None)?;
        self.pending.store(entries.len(), Ordering::Relaxed);
        Ok(entries)
    }

    /// Confirmed by XDR: remove.
    pub fn remove(&self, id: &str) {
        if std::fs::remove_file(self.path(id)).is_ok() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Rejected for good: move to `failed/` with the reason.
    pub fn fail(&self, e: &Entry, reason: &str) {
        let _ = std::fs::create_dir_all(&self.failed);
        let body = serde_json::json!({"reason": reason, "entry": e});
        let _ = write_atomic(
            &self.failed.join(format!("{}.json", e.id)),
            &serde_json::to_vec_pretty(&body).unwrap_or_default(),
            false,
        );
        self.remove(&e.id);
    }
}

/// The entries in the outbox directory `dir`, oldest first. With `failed` (at start-up, when
/// nothing else writes there): leftover temporary files of an interrupted write are removed and
/// unreadable entries moved to `failed`. Without it (while running), both are left alone: a
/// temporary file may be a write in progress.
fn read_entries(dir: &Path, failed: Option<&Path>) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        if name.ends_with(".tmp") {
            if failed.is_some() {
                let _ = std::fs::remove_file(&p);
            }
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        match std::fs::read(&p).ok().and_then(|b| serde_json::from_slice::<Entry>(&b).ok()) {
            Some(en) => entries.push(en),
            None => {
                if let Some(failed) = failed {
                    tracing::warn!(path = %p.display(), "unreadable XDR outbox entry; moved to failed/");
                    let _ = std::fs::create_dir_all(failed);
                    let _ = std::fs::rename(&p, failed.join(&name));
                }
            }
        }
    }
    entries.sort_by_key(|e| e.seq);
    Ok(entries)
}

/// An entry XDR rejected for good, as kept in `failed/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failed {
    /// The service's message.
    pub reason: String,
    pub entry: Entry,
}

/// The entries in `<state>/failed/`, oldest first, with their files. Unreadable files are
/// returned as errors with their path, not skipped: a human is looking at this list.
pub fn failed(state: &Path) -> std::io::Result<Vec<(PathBuf, Result<Failed, String>)>> {
    let dir = state.join("failed");
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd {
        let p = e?.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let parsed = std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Failed>(&b).map_err(|e| e.to_string()));
        out.push((p, parsed));
    }
    out.sort_by_key(|(_, f)| f.as_ref().map_or(u64::MAX, |f| f.entry.seq));
    Ok(out)
}

/// Moves a failed entry back into the outbox (durably), for delivery by the next
/// [`Outbox::rescan`] or start. The `failed/` file is removed only once the outbox file is on
/// disk, so a crash in between leaves a duplicate at worst, never a loss.
pub fn requeue(state: &Path, file: &Path, f: &Failed) -> std::io::Result<()> {
    let target = state.join("outbox").join(format!("{}.json", f.entry.id));
    write_atomic(&target, &serde_json::to_vec(&f.entry)?, true)?;
    std::fs::remove_file(file)
}

/// Sequence numbers start from the clock so that entries of a restarted process sort after
/// those of the previous one even if its last entries were already delivered.
fn now_seq_base() -> u64 {
    (chrono::Utc::now().timestamp_micros().max(0) as u64) << 8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ob: &Outbox, id: &str) -> Entry {
        Entry {
            id: id.into(),
            seq: ob.next_seq(),
            rule: "r".into(),
            queued_at: "2024-01-01T00:00:00.000Z".into(),
            bundle: serde_json::json!({}),
        }
    }

    #[test]
    fn entries_survive_reopen_in_order_and_replays_replace() {
        let dir = tempfile::tempdir().unwrap();
        let (ob, e) = Outbox::open(dir.path()).unwrap();
        assert!(e.is_empty());
        assert!(ob.put(&entry(&ob, "b")).unwrap());
        assert!(ob.put(&entry(&ob, "a")).unwrap());
        assert!(!ob.put(&entry(&ob, "a")).unwrap(), "same id replaces");
        assert_eq!(ob.pending(), 2);
        ob.sync().unwrap();
        std::fs::write(dir.path().join("outbox/.x.json.tmp"), "torn").unwrap();
        let (ob2, e) = Outbox::open(dir.path()).unwrap();
        assert_eq!(e.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert!(ob2.next_seq() > e[1].seq);
        ob2.remove("b");
        ob2.fail(&e[1], "bad");
        assert_eq!(ob2.pending(), 0);
        assert!(dir.path().join("failed/a.json").exists());
        assert!(!dir.path().join("outbox/.x.json.tmp").exists());
    }

    fn patch(incident: &str, seq: u64, count: u64) -> Patch {
        Patch {
            incident: incident.into(),
            seq,
            rule: "r".into(),
            queued_at: String::new(),
            body: serde_json::json!({"meta": {"detections": count}}),
            entity: serde_json::json!({}),
            source: "t".into(),
        }
    }

    #[test]
    fn patches_coalesce_per_incident_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (ob, _) = Outbox::open(dir.path()).unwrap();
        ob.put_patch(&patch("transient:i1", 1, 1)).unwrap();
        ob.put_patch(&patch("transient:i1", 2, 2)).unwrap();
        ob.put_patch(&patch("transient:i2", 3, 1)).unwrap();
        ob.sync().unwrap();
        let (ob, _) = Outbox::open(dir.path()).unwrap();
        let p = ob.pending_patches().unwrap();
        assert_eq!(p, vec![patch("transient:i1", 2, 2), patch("transient:i2", 3, 1)], "one per incident, newest");
        // Sent seq 2, but seq 4 replaced it meanwhile: it stays.
        ob.put_patch(&patch("transient:i1", 4, 3)).unwrap();
        assert!(!ob.remove_patch("transient:i1", 2));
        assert!(ob.remove_patch("transient:i1", 4));
        assert!(ob.remove_patch("transient:i2", 3));
        assert!(ob.pending_patches().unwrap().is_empty());
    }
}
