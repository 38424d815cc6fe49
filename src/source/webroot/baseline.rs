//! The baseline: every file's last known state, in SQLite in the state directory, sealed with
//! a keyed MAC so that it cannot be edited unnoticed.
//!
//! Each row carries `HMAC-SHA256(key, row)`; the seal in `meta` is the HMAC of the row count,
//! the XOR of every row's MAC and the `tampered` flag. Changing, adding or removing a row
//! without the key breaks a row MAC or the seal; the XOR lets a change of one row update the
//! seal without reading the others. The key (32 random bytes, mode 0600) lives next to the
//! database: this detects edits by whoever can write the database but not read the key
//! (a web application's user), not by root.
//!
//! A broken seal is reported at every start until `trapline webroot accept` rebuilds the
//! baseline from disk: the flag is inside the seal, so removing it breaks the seal again.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::Sha256;

use super::scan::Entry;

type HmacSha256 = Hmac<Sha256>;

/// The database file in the state directory.
pub const DB_FILE: &str = "webroot.sqlite";
/// Most rows of change history kept (the oldest go first).
const HISTORY_ROWS: i64 = 100_000;

/// The MAC key file in the state directory.
pub const KEY_FILE: &str = "webroot.key";

/// What the start-up check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// Seal and every row verified (or a new, empty baseline).
    Intact,
    /// The baseline was changed without the key: why, for the report.
    Tampered(String),
}

/// The baseline of one configured web-root source.
pub struct Baseline {
    conn: Connection,
    source: String,
    key: Vec<u8>,
    /// path → state, for the rows of this source.
    pub rows: BTreeMap<Vec<u8>, Entry>,
    macs: BTreeMap<Vec<u8>, [u8; 32]>,
    xor: [u8; 32],
    tampered: bool,
    pub path: PathBuf,
}

impl Baseline {
    /// Opens (creating when needed) the baseline of `source` in `state_dir` and verifies it.
    pub fn open(state_dir: &Path, source: &str) -> Result<(Baseline, Integrity)> {
        std::fs::create_dir_all(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
        let path = state_dir.join(DB_FILE);
        let existed = path.exists();
        let conn = Connection::open(&path).with_context(|| format!("cannot open baseline {}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS files (
                 source TEXT NOT NULL, path BLOB NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
                 size INTEGER NOT NULL, mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
                 mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, sha256 TEXT, content TEXT NOT NULL,
                 mac BLOB NOT NULL, PRIMARY KEY (source, path));
             CREATE INDEX IF NOT EXISTS files_inode ON files(source, dev, ino);
             CREATE TABLE IF NOT EXISTS meta (source TEXT NOT NULL, key TEXT NOT NULL, value BLOB, PRIMARY KEY (source, key));
             CREATE TABLE IF NOT EXISTS changes (source TEXT NOT NULL, at TEXT NOT NULL, change TEXT NOT NULL,
                 path BLOB NOT NULL, old_path BLOB, reported INTEGER NOT NULL, note TEXT);
             CREATE TABLE IF NOT EXISTS accepts (source TEXT NOT NULL, at TEXT NOT NULL, who TEXT NOT NULL,
                 paths TEXT NOT NULL, files INTEGER NOT NULL);",
        )
        .with_context(|| format!("cannot set up baseline {}", path.display()))?;
        add_columns(&conn)?;
        let (key, key_new) = load_key(&state_dir.join(KEY_FILE))?;
        let mut b = Baseline {
            conn,
            source: source.to_string(),
            key,
            rows: BTreeMap::new(),
            macs: BTreeMap::new(),
            xor: [0; 32],
            tampered: false,
            path,
        };
        let mut problems = Vec::new();
        {
            let mut st = b.conn.prepare(
                "SELECT path, dev, ino, size, mode, uid, gid, mtime_ns, ctime_ns, sha256, content, mac FROM files WHERE source = ?1",
            )?;
            let mut q = st.query(params![source])?;
            let mut bad = 0usize;
            while let Some(r) = q.next()? {
                let e = Entry {
                    path: r.get(0)?,
                    dev: r.get::<_, i64>(1)? as u64,
                    ino: r.get::<_, i64>(2)? as u64,
                    size: r.get::<_, i64>(3)? as u64,
                    mode: r.get(4)?,
                    uid: r.get(5)?,
                    gid: r.get(6)?,
                    mtime_ns: r.get(7)?,
                    ctime_ns: r.get(8)?,
                    sha256: r.get(9)?,
                    content: r.get(10)?,
                };
                let stored: Vec<u8> = r.get(11)?;
                let mac = row_mac(&b.key, source, &e);
                if stored.as_slice() != mac.as_slice() {
                    bad += 1;
                }
                xor_into(&mut b.xor, &mac);
                b.macs.insert(e.path.clone(), mac);
                b.rows.insert(e.path.clone(), e);
            }
            if bad > 0 {
                problems.push(format!("{bad} file rows do not carry their MAC"));
            }
        }
        let seal: Option<Vec<u8>> = b.meta("seal")?;
        let tampered_flag: Option<Vec<u8>> = b.meta("tampered")?;
        b.tampered = tampered_flag.is_some_and(|v| v == b"1");
        match seal {
            Some(s) if s.as_slice() != b.seal().as_slice() => {
                problems.push("the seal over the rows does not verify (rows added, removed or edited)".into())
            }
            None if !b.rows.is_empty() => problems.push("the rows carry no seal".into()),
            _ => {}
        }
        if key_new && existed && !b.rows.is_empty() {
            problems.push(format!("the MAC key {} was missing", state_dir.join(KEY_FILE).display()));
        }
        if b.tampered && problems.is_empty() {
            problems.push("tampering found at an earlier start was never resolved by `trapline webroot accept`".into());
        }
        let integrity = if problems.is_empty() {
            Integrity::Intact
        } else {
            b.tampered = true;
            b.set_meta("tampered", b"1")?;
            b.write_seal()?;
            Integrity::Tampered(problems.join("; "))
        };
        Ok((b, integrity))
    }

    /// Whether this source has a baseline yet (false: the first start, which builds it).
    pub fn is_built(&self) -> Result<bool> {
        Ok(self.meta("built")?.is_some())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE source = ?1 AND key = ?2", params![self.source, key], |r| r.get(0))
            .optional()?)
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (source, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (source, key) DO UPDATE SET value = ?3",
            params![self.source, key, value],
        )?;
        Ok(())
    }

    fn seal(&self) -> [u8; 32] {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("any key length");
        m.update(b"trapline webroot seal\0");
        m.update(self.source.as_bytes());
        m.update(b"\0");
        m.update(&(self.rows.len() as u64).to_le_bytes());
        m.update(&self.xor);
        m.update(if self.tampered { b"1" } else { b"0" });
        m.finalize().into_bytes().into()
    }

    fn write_seal(&self) -> Result<()> {
        self.set_meta("seal", &self.seal())
    }

    /// Applies a batch of new states (`Some`) and removals (`None`) by path, with the history
    /// of what was changed, in one transaction, and reseals.
    pub fn apply(&mut self, updates: Vec<(Vec<u8>, Option<Entry>)>, history: &[HistoryRow]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO files (source, path, dev, ino, size, mode, uid, gid, mtime_ns, ctime_ns, sha256, content, mac)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM files WHERE source = ?1 AND path = ?2")?;
            for (path, entry) in updates {
                if let Some(old) = self.macs.remove(&path) {
                    xor_into(&mut self.xor, &old);
                }
                self.rows.remove(&path);
                match entry {
                    Some(e) => {
                        let mac = row_mac(&self.key, &self.source, &e);
                        put.execute(params![
                            self.source,
                            e.path,
                            e.dev as i64,
                            e.ino as i64,
                            e.size as i64,
                            e.mode,
                            e.uid,
                            e.gid,
                            e.mtime_ns,
                            e.ctime_ns,
                            e.sha256,
                            e.content,
                            mac.as_slice()
                        ])?;
                        xor_into(&mut self.xor, &mac);
                        self.macs.insert(path.clone(), mac);
                        self.rows.insert(path, e);
                    }
                    None => {
                        del.execute(params![self.source, path])?;
                    }
                }
            }
            let mut hist = tx.prepare_cached(
                "INSERT INTO changes (source, at, change, path, old_path, reported, note, old_size, size, old_sha256, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for h in history {
                hist.execute(params![
                    self.source,
                    h.at,
                    h.change,
                    h.path,
                    h.old_path,
                    h.reported as i64,
                    h.note,
                    h.old_size.map(|v| v as i64),
                    h.size.map(|v| v as i64),
                    h.old_sha256,
                    h.sha256
                ])?;
            }
            if !history.is_empty() {
                // The history is for looking back at recent deploys and suppressed changes,
                // not an archive: a busy tree must not grow the database without end.
                tx.prepare_cached(
                    "DELETE FROM changes WHERE source = ?1 AND rowid <= (SELECT max(rowid) FROM changes) - ?2",
                )?
                .execute(params![self.source, HISTORY_ROWS])?;
            }
        }
        tx.execute(
            "INSERT INTO meta (source, key, value) VALUES (?1, 'seal', ?2) ON CONFLICT (source, key) DO UPDATE SET value = ?2",
            params![self.source, self.seal().as_slice()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks the baseline as built (after the first full scan).
    pub fn mark_built(&self) -> Result<()> {
        self.set_meta("built", chrono::Utc::now().to_rfc3339().as_bytes())
    }

    /// Records an accepted deploy; `all`: the whole tree was re-baselined, which also clears
    /// an earlier tamper finding.
    pub fn record_accept(&mut self, who: &str, paths: &str, files: usize, all: bool) -> Result<()> {
        self.conn.execute(
            "INSERT INTO accepts (source, at, who, paths, files) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![self.source, chrono::Utc::now().to_rfc3339(), who, paths, files as i64],
        )?;
        if all && self.tampered {
            // Every row is rewritten with the current key: the old ones may carry MACs of
            // another key (a replaced key file) or none.
            let rows: Vec<Entry> = self.rows.values().cloned().collect();
            let updates = rows.into_iter().map(|e| (e.path.clone(), Some(e))).collect();
            self.tampered = false;
            self.set_meta("tampered", b"0")?;
            self.apply(updates, &[])?;
        }
        self.write_seal()
    }

    /// Whether a tamper finding is standing (until everything is accepted).
    pub fn tampered(&self) -> bool {
        self.tampered
    }
}

/// One line of the change history.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub at: String,
    pub change: &'static str,
    pub path: Vec<u8>,
    pub old_path: Option<Vec<u8>>,
    pub reported: bool,
    /// Why a change was not reported (maintenance window, flapping, accepted).
    pub note: Option<&'static str>,
    /// Size and SHA-256 before and after (absent where there is no such state or no hash).
    pub old_size: Option<u64>,
    pub size: Option<u64>,
    pub old_sha256: Option<String>,
    pub sha256: Option<String>,
}

impl HistoryRow {
    /// A row of `change` from the states before and after.
    pub fn of(
        at: String,
        change: &'static str,
        old: Option<&Entry>,
        new: Option<&Entry>,
        reported: bool,
        note: Option<&'static str>,
    ) -> HistoryRow {
        let path = new.or(old).map(|e| e.path.clone()).unwrap_or_default();
        let old_path = old.filter(|o| new.is_some_and(|n| n.path != o.path)).map(|o| o.path.clone());
        HistoryRow {
            at,
            change,
            path,
            old_path,
            reported,
            note,
            old_size: old.map(|e| e.size),
            size: new.map(|e| e.size),
            old_sha256: old.and_then(|e| e.sha256.clone()),
            sha256: new.and_then(|e| e.sha256.clone()),
        }
    }
}

/// A change as the history table keeps it, for the dashboard.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChangeRow {
    /// What [`accept_changes`] takes.
    pub id: i64,
    pub source: String,
    pub at: String,
    pub change: String,
    /// Lossy UTF-8 (file names need not be UTF-8).
    pub path: String,
    pub old_path: Option<String>,
    pub reported: bool,
    pub note: Option<String>,
    pub old_size: Option<i64>,
    pub size: Option<i64>,
    pub old_sha256: Option<String>,
    pub sha256: Option<String>,
    /// Who accepted the (reported) change, and when; absent: not reviewed yet.
    pub accepted_by: Option<String>,
    pub accepted_at: Option<String>,
}

/// The newest `limit` changes of every web root of `state_dir`, newest first; empty when no
/// web root was ever watched. Opens the database read-only: the daemon keeps writing it.
pub fn recent_changes(state_dir: &Path, limit: usize) -> Result<Vec<ChangeRow>> {
    let path = state_dir.join(DB_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mut st = conn.prepare(
        "SELECT source, at, change, path, old_path, reported, note, old_size, size, old_sha256, sha256,
                rowid, accepted_by, accepted_at
         FROM changes ORDER BY rowid DESC LIMIT ?1",
    )?;
    let lossy = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let rows = st.query_map([limit as i64], |r| {
        Ok(ChangeRow {
            source: r.get(0)?,
            at: r.get(1)?,
            change: r.get(2)?,
            path: lossy(r.get(3)?),
            old_path: r.get::<_, Option<Vec<u8>>>(4)?.map(lossy),
            reported: r.get::<_, i64>(5)? != 0,
            note: r.get(6)?,
            old_size: r.get(7)?,
            size: r.get(8)?,
            old_sha256: r.get(9)?,
            sha256: r.get(10)?,
            id: r.get(11)?,
            accepted_by: r.get(12)?,
            accepted_at: r.get(13)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Columns added to `changes` after the first release: added to a database that lacks them.
fn add_columns(conn: &Connection) -> Result<()> {
    for col in
        ["old_size INTEGER", "size INTEGER", "old_sha256 TEXT", "sha256 TEXT", "accepted_by TEXT", "accepted_at TEXT"]
    {
        let name = col.split(' ').next().unwrap_or_default();
        let has: bool = conn.prepare("SELECT 1 FROM pragma_table_info('changes') WHERE name = ?1")?.exists([name])?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE changes ADD COLUMN {col}"))?;
        }
    }
    Ok(())
}

/// A person (`who`) accepts reported changes `ids` (rows of [`recent_changes`]) after
/// checking them: the baseline already holds the files as they are (a change is reported
/// and then becomes the baseline), so this records the review, it changes no file state.
/// Returns how many were accepted now (already accepted or unknown ids are left as they are).
/// Safe while the daemon writes the database: one short transaction, waiting for its lock.
pub fn accept_changes(state_dir: &Path, ids: &[i64], who: &str) -> Result<usize> {
    let path = state_dir.join(DB_FILE);
    if !path.exists() {
        anyhow::bail!("no web-root baseline at {} yet", path.display());
    }
    let mut conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .with_context(|| format!("cannot open {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    add_columns(&conn)?;
    let at = chrono::Utc::now().to_rfc3339();
    let tx = conn.transaction()?;
    let mut n = 0;
    {
        let mut st = tx.prepare(
            "UPDATE changes SET accepted_by = ?1, accepted_at = ?2 WHERE rowid = ?3 AND reported = 1 AND accepted_by IS NULL",
        )?;
        for id in ids {
            n += st.execute(params![who, at, id])?;
        }
    }
    tx.commit()?;
    Ok(n)
}

fn row_mac(key: &[u8], source: &str, e: &Entry) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    m.update(source.as_bytes());
    m.update(b"\0");
    m.update(&(e.path.len() as u64).to_le_bytes());
    m.update(&e.path);
    for v in [e.dev, e.ino, e.size] {
        m.update(&v.to_le_bytes());
    }
    for v in [e.mode, e.uid, e.gid] {
        m.update(&v.to_le_bytes());
    }
    for v in [e.mtime_ns, e.ctime_ns] {
        m.update(&v.to_le_bytes());
    }
    m.update(e.sha256.as_deref().unwrap_or("-").as_bytes());
    m.update(b"\0");
    m.update(e.content.as_bytes());
    m.finalize().into_bytes().into()
}

fn xor_into(acc: &mut [u8; 32], mac: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(mac) {
        *a ^= b;
    }
}

/// Reads the key, or creates it (mode 0600, 32 bytes from the kernel's random source, as
/// every secret of trapline).
/// Returns whether it was created now.
fn load_key(path: &Path) -> Result<(Vec<u8>, bool)> {
    match std::fs::read(path) {
        Ok(k) if k.len() >= 32 => return Ok((k, false)),
        Ok(_) => anyhow::bail!("baseline key {} is shorter than 32 bytes", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read baseline key {}", path.display())),
    }
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("cannot read the kernel's random source for the baseline key: {e}"))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create baseline key {}", path.display()))?;
    f.write_all(&key)?;
    f.sync_all()?;
    Ok((key, true))
}

/// A path as bytes (file names need not be UTF-8).
pub fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            dev: 1,
            ino: size + 100,
            size,
            mode: 0o100644,
            uid: 33,
            gid: 33,
            mtime_ns: 1,
            ctime_ns: 2,
            sha256: Some("ab".repeat(32)),
            content: "php".into(),
        }
    }

    /// A baseline of two files in a fresh state directory, closed again.
    fn built(dir: &Path) {
        let (mut b, i) = Baseline::open(dir, "site").unwrap();
        assert_eq!(i, Integrity::Intact);
        b.apply(
            vec![
                (b"/w/a.php".to_vec(), Some(entry("/w/a.php", 1))),
                (b"/w/b.php".to_vec(), Some(entry("/w/b.php", 2))),
            ],
            &[],
        )
        .unwrap();
        b.mark_built().unwrap();
    }

    fn reopen(dir: &Path) -> Integrity {
        Baseline::open(dir, "site").unwrap().1
    }

    fn sql(dir: &Path, q: &str) {
        Connection::open(dir.join(DB_FILE)).unwrap().execute(q, []).unwrap();
    }

    #[test]
    fn an_untouched_baseline_verifies_and_keeps_its_rows() {
        let d = tempfile::tempdir().unwrap();
        built(d.path());
        let (b, i) = Baseline::open(d.path(), "site").unwrap();
        assert_eq!(i, Integrity::Intact);
        assert_eq!(b.rows.len(), 2);
        assert_eq!(b.rows[b"/w/b.php".as_slice()], entry("/w/b.php", 2));
        // Another source's rows are its own.
        assert_eq!(Baseline::open(d.path(), "other").unwrap().0.rows.len(), 0);
    }

    #[test]
    fn edits_without_the_key_are_found() {
        type Tamper<'a> = (&'a str, &'a dyn Fn(&Path));
        let cases: [Tamper; 5] = [
            ("edited row", &|d| sql(d, "UPDATE files SET size = 99 WHERE path = CAST('/w/a.php' AS BLOB)")),
            ("removed row", &|d| sql(d, "DELETE FROM files WHERE path = CAST('/w/a.php' AS BLOB)")),
            ("copied row", &|d| {
                sql(
                    d,
                    "INSERT INTO files SELECT source, CAST('/w/x.php' AS BLOB), dev, ino, size, mode, uid, gid, mtime_ns, ctime_ns, sha256, content, mac FROM files WHERE path = CAST('/w/a.php' AS BLOB)",
                )
            }),
            ("seal removed", &|d| sql(d, "DELETE FROM meta WHERE key = 'seal'")),
            ("key replaced", &|d| {
                std::fs::remove_file(d.join(KEY_FILE)).unwrap();
            }),
        ];
        for (what, tamper) in cases {
            let d = tempfile::tempdir().unwrap();
            built(d.path());
            tamper(d.path());
            assert!(matches!(reopen(d.path()), Integrity::Tampered(_)), "{what}");
            // And at every start after, until everything is accepted.
            assert!(matches!(reopen(d.path()), Integrity::Tampered(_)), "{what}, again");
            let (mut b, _) = Baseline::open(d.path(), "site").unwrap();
            b.record_accept("test", "*", 0, true).unwrap();
            drop(b);
            assert_eq!(reopen(d.path()), Integrity::Intact, "{what}, accepted");
        }
    }
}
