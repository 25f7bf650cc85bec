//! The offline CLI's memory between runs: what `apply` last wrote for each resource.
//!
//! The operator keeps ownership in each resource's status; without a cluster, `apply`
//! keeps the same status objects in a JSON file (default `.shadowsync/state.json`), so
//! that a key removed from a manifest is nulled in the shadow on the next run and
//! conflicts are classified the same way. The file is written atomically (temporary
//! file, fsync, rename) and guarded by an advisory lock so two runs cannot interleave.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{RetainedMessage, RetainedMessageStatus, ThingShadow, ThingShadowStatus};
use crate::kinds::Kind;

/// The current layout version of the state file.
const FORMAT: u32 = 1;

/// What the file holds.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
pub struct State {
    #[serde(default)]
    pub format: u32,
    /// `namespace/name` -> last status and target.
    #[serde(default, rename = "thingShadows")]
    pub thing_shadows: BTreeMap<String, ShadowEntry>,
    #[serde(default, rename = "retainedMessages")]
    pub retained_messages: BTreeMap<String, RetainedEntry>,
}

/// Last known state of one `ThingShadow`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShadowEntry {
    pub thing_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_name: Option<String>,
    pub status: ThingShadowStatus,
}

/// Last known state of one `RetainedMessage`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetainedEntry {
    pub topic: String,
    pub status: RetainedMessageStatus,
}

/// What the CLI adds to a [`Kind`]: where its entries live in the state file. The
/// operator keeps the same status in the resource itself.
pub trait Stored: Kind {
    type Entry;
    fn entries(state: &State) -> &BTreeMap<String, Self::Entry>;
    fn entries_mut(state: &mut State) -> &mut BTreeMap<String, Self::Entry>;
    /// The entry remembering `status` for this resource.
    fn entry(&self, status: Self::Status) -> Self::Entry;
    fn entry_status(entry: &Self::Entry) -> &Self::Status;
    /// The target fields as the entry remembers them, in the order of
    /// [`Kind::target_fields`].
    fn entry_target(entry: &Self::Entry) -> Vec<(&'static str, String)>;
}

impl Stored for ThingShadow {
    type Entry = ShadowEntry;
    fn entries(state: &State) -> &BTreeMap<String, ShadowEntry> {
        &state.thing_shadows
    }
    fn entries_mut(state: &mut State) -> &mut BTreeMap<String, ShadowEntry> {
        &mut state.thing_shadows
    }
    fn entry(&self, status: ThingShadowStatus) -> ShadowEntry {
        ShadowEntry {
            thing_name: self.spec.thing_name.clone(),
            shadow_name: self.spec.shadow_name.clone(),
            status,
        }
    }
    fn entry_status(entry: &ShadowEntry) -> &ThingShadowStatus {
        &entry.status
    }
    fn entry_target(entry: &ShadowEntry) -> Vec<(&'static str, String)> {
        crate::kinds::shadow_target_fields(&entry.thing_name, entry.shadow_name.as_deref())
    }
}

impl Stored for RetainedMessage {
    type Entry = RetainedEntry;
    fn entries(state: &State) -> &BTreeMap<String, RetainedEntry> {
        &state.retained_messages
    }
    fn entries_mut(state: &mut State) -> &mut BTreeMap<String, RetainedEntry> {
        &mut state.retained_messages
    }
    fn entry(&self, status: RetainedMessageStatus) -> RetainedEntry {
        RetainedEntry {
            topic: self.spec.topic.clone(),
            status,
        }
    }
    fn entry_status(entry: &RetainedEntry) -> &RetainedMessageStatus {
        &entry.status
    }
    fn entry_target(entry: &RetainedEntry) -> Vec<(&'static str, String)> {
        vec![("spec.topic", entry.topic.clone())]
    }
}

/// A state file held under an exclusive lock for the life of this value.
pub struct StateFile {
    path: PathBuf,
    _lock: File,
    pub state: State,
}

impl StateFile {
    /// Locks and reads the file (an absent file is an empty state). Fails when another
    /// run holds the lock, or when the file is not a state file.
    pub fn open(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        }
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|err| format!("cannot open {}: {err}", lock_path.display()))?;
        lock.try_lock().map_err(|_| {
            format!(
                "{} is locked: another shadowsync apply is running with this state file",
                path.display()
            )
        })?;
        let state = match std::fs::read(path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes).map_err(|err| {
                    format!("{} is not a shadowsync state file: {err}", path.display())
                })?;
                if state.format > FORMAT {
                    return Err(format!(
                        "{} was written by a newer shadowsync (format {})",
                        path.display(),
                        state.format
                    ));
                }
                state
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
        };
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
            state,
        })
    }

    /// Writes the state atomically: a crash leaves either the old or the new file.
    pub fn save(&mut self) -> Result<(), String> {
        self.state.format = FORMAT;
        let bytes = serde_json::to_vec_pretty(&self.state)
            .map_err(|err| format!("cannot encode state: {err}"))?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // The rename itself must reach the disk.
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|err| format!("cannot write {}: {err}", self.path.display()))
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_creates_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state.json");
        {
            let mut file = StateFile::open(&path).unwrap();
            assert_eq!(file.state, State::default());
            file.state.thing_shadows.insert(
                "home/lamp".into(),
                ShadowEntry {
                    thing_name: "lamp".into(),
                    shadow_name: None,
                    status: ThingShadowStatus {
                        managed_paths: vec!["/power".into()],
                        ..Default::default()
                    },
                },
            );
            file.save().unwrap();
        }
        let file = StateFile::open(&path).unwrap();
        assert_eq!(
            file.state.thing_shadows["home/lamp"].status.managed_paths,
            ["/power"]
        );
        assert_eq!(file.state.format, FORMAT);
    }

    #[test]
    fn a_second_run_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let _first = StateFile::open(&path).unwrap();
        let err = StateFile::open(&path).err().unwrap();
        assert!(err.contains("is locked"), "{err}");
    }

    #[test]
    fn a_foreign_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "not json").unwrap();
        let err = StateFile::open(&path).err().unwrap();
        assert!(err.contains("is not a shadowsync state file"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not json");
    }
}
