//! The engine's cross-line state (threshold windows, suppression) across restarts.
//!
//! Saved with every checkpoint at which it changed, into one of two slot files
//! (`engine-0.json`, `engine-1.json`, alternating), and the checkpoint's mark names the slot
//! and generation. A crash between writing a slot and writing the checkpoint leaves the
//! previous slot — the one the previous checkpoint names — intact, so the state restored is
//! always that of exactly the lines before the checkpoint; the lines after it are read again
//! and step the windows again.
//!
//! Serialising and writing the state (megabytes for tens of thousands of clients) happens on
//! a thread of its own: only the snapshot is taken on the reading thread. The source writes
//! the checkpoint naming the new slot once [`EngineStore::durable`] says the slot is on disk,
//! and meanwhile keeps reading; one slot write is in flight at a time. The file also holds the secret seed of the key hashes (the
//! keys are hashes): the state directory must stay private, as it already holds offsets and
//! the XDR outbox.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, TryRecvError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::engine::Detector;
use crate::engine::detector::DetectorState;

/// Name of the engine's entry in a checkpoint's marks.
pub const MARK: &str = "engine";

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    generation: u64,
    state: DetectorState,
}

pub struct EngineStore {
    dir: PathBuf,
    generation: u64,
    /// The detector's generation at the last durable save, and the mark of that save.
    last: Option<(u64, serde_json::Value)>,
    /// The save being written: the detector's generation, its mark, and where the writer
    /// reports the outcome.
    in_flight: Option<(u64, serde_json::Value, Receiver<std::io::Result<()>>)>,
}

impl EngineStore {
    pub fn new(dir: &Path) -> EngineStore {
        EngineStore { dir: dir.to_path_buf(), generation: 0, last: None, in_flight: None }
    }

    fn slot(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("engine-{}.json", generation % 2))
    }

    /// The state named by a checkpoint's `mark`, if it is there and is that generation.
    /// Also uses its hash seed for this process, so the saved keys mean the same.
    pub fn load(&mut self, mark: Option<&serde_json::Value>) -> Result<Option<DetectorState>> {
        let Some(generation) = mark.and_then(|m| m.get("generation")).and_then(|g| g.as_u64()) else {
            return Ok(None);
        };
        self.generation = generation;
        let path = self.slot(generation);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), "saved engine state missing; thresholds and suppression start empty");
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let saved: Saved = match serde_json::from_slice(&text) {
            Ok(s) => s,
            Err(e) => {
                // Not worth refusing to start over (an older format, a damaged disk): the state
                // only shapes thresholds and suppression.
                tracing::warn!(path = %path.display(), error = %e, "saved engine state unreadable; thresholds and suppression start empty");
                return Ok(None);
            }
        };
        if saved.generation != generation {
            tracing::warn!(path = %path.display(), "saved engine state is not the checkpoint's; thresholds and suppression start empty");
            return Ok(None);
        }
        if !crate::engine::detector::use_seed(saved.state.seed) {
            tracing::warn!("key hashes already seeded; saved engine state not restored");
            return Ok(None);
        }
        Ok(Some(saved.state))
    }

    /// Forgets the last save, so the next one writes: after a reload the state changes
    /// (windows of changed rules reset) without the hit counts saying so.
    pub fn invalidate(&mut self) {
        self.last = None;
        // Nor may a save in flight, of the state before the reload, count as the last one.
        if let Some((g, _, _)) = &mut self.in_flight {
            *g = u64::MAX;
        }
    }

    /// Saves the detector's state if it changed since the last save; returns the mark to
    /// store with the checkpoint. The slot is written in the background: the mark may be
    /// stored only once [`EngineStore::durable`] says so. A save still in flight is finished
    /// first.
    pub fn save(&mut self, det: &Detector) -> std::io::Result<serde_json::Value> {
        self.durable(true)?;
        let g = det.generation();
        if let Some((last, mark)) = &self.last
            && *last == g
        {
            return Ok(mark.clone());
        }
        self.generation += 1;
        // Only the cheap snapshot is taken here, on the reading thread.
        let (generation, snapshot) = (self.generation, det.snapshot());
        let path = self.slot(self.generation);
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::Builder::new().name("engine-state".into()).spawn(move || {
            let saved = Saved { generation, state: snapshot.into_state() };
            // Serialised into one buffer, written with one call: a state of 100,000 keys
            // streamed token by token into the file took seconds.
            let written = serde_json::to_vec(&saved)
                .map_err(std::io::Error::other)
                .and_then(|bytes| crate::state::write_atomic(&path, &bytes, true));
            let _ = tx.send(written);
        })?;
        let mark = json!({ "generation": self.generation });
        self.in_flight = Some((g, mark.clone(), rx));
        Ok(mark)
    }

    /// Whether the last save is on disk (with `wait`, blocks until it is). A failed write is
    /// reported once; the next save writes again.
    pub fn durable(&mut self, wait: bool) -> std::io::Result<bool> {
        let Some((_, _, rx)) = &self.in_flight else { return Ok(true) };
        let written = if wait {
            rx.recv().unwrap_or_else(|_| Err(std::io::Error::other("engine state writer stopped")))
        } else {
            match rx.try_recv() {
                Ok(w) => w,
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::Disconnected) => Err(std::io::Error::other("engine state writer stopped")),
            }
        };
        let (g, mark, _) = self.in_flight.take().expect("checked above");
        written?;
        self.last = Some((g, mark));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Pipeline, setup};

    #[test]
    fn saved_state_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let built = setup::build(None, &[PathBuf::from("rules")], &[]).unwrap();
        let pipeline = Pipeline::new(built, 1000);
        let mut store = EngineStore::new(dir.path());
        let mark = store.save(pipeline.detector()).unwrap();
        assert_eq!(mark, json!({ "generation": 1 }));
        assert!(store.durable(true).unwrap());
        // Unchanged state: no new slot, the same mark.
        assert_eq!(store.save(pipeline.detector()).unwrap(), mark);
        let text = fs::read(dir.path().join("engine-1.json")).unwrap();
        let saved: Saved = serde_json::from_slice(&text).unwrap();
        assert_eq!(saved.generation, 1);
        assert_eq!(saved.state.rules.len(), pipeline.detector().save().rules.len());
        let mut again = EngineStore::new(dir.path());
        let loaded = again.load(Some(&mark)).unwrap().expect("state restored");
        assert_eq!(loaded.seed, saved.state.seed);
    }
}
