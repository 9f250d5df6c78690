//! Volumes and snapshots on disk: the only record of them there is.
//!
//! ```text
//! STATE/volumes/<id>/volume.json     what CreateVolume was asked (name, source, owner)
//! STATE/volumes/<id>/disk.img        the volume: a preallocated image, its length the capacity
//! STATE/snapshots/<id>/snapshot.json
//! STATE/snapshots/<id>/disk.img      a copy of the source volume's image
//! STATE/staging/<id>/                an object being made (not yet committed)
//! STATE/deleting/<id>/               an object being removed (already gone)
//! ```
//!
//! An object is made in `staging/` and committed by one rename into place,
//! and removed by one rename out of it, each followed by an fsync of the
//! directory: whatever step a kill -9 interrupts, the object either exists
//! whole or not at all, and [`Store::open`] removes what `staging/` and
//! `deleting/` still hold. A volume's capacity is its image's length, so an
//! expansion interrupted after the image grew needs no second record.

use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

pub const IMAGE: &str = "disk.img";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Volume,
    Snapshot,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Volume => "volumes",
            Kind::Snapshot => "snapshots",
        }
    }
    fn meta_file(self) -> &'static str {
        match self {
            Kind::Volume => "volume.json",
            Kind::Snapshot => "snapshot.json",
        }
    }
}

/// Where a volume's first contents came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    Snapshot(String),
    Volume(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMeta {
    pub name: String,
    pub id: String,
    /// Whether it was made for raw block access (else a filesystem).
    pub block: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// The claim and volume the provisioner named, if it did.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub owner: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMeta {
    pub name: String,
    pub id: String,
    pub source_volume_id: String,
    pub size_bytes: u64,
    pub created_seconds: i64,
    pub created_nanos: i32,
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (making it if need be) the state directory, and removes what an
    /// interrupted create or delete left in `staging/` and `deleting/`.
    pub fn open(root: &Path) -> io::Result<Store> {
        for dir in ["volumes", "snapshots", "staging", "deleting"] {
            fs::create_dir_all(root.join(dir)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("making {}: {e}", root.join(dir).display()),
                )
            })?;
        }
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in ["staging", "deleting"] {
            for entry in fs::read_dir(root.join(dir))? {
                let path = entry?.path();
                tracing::info!(path = %path.display(), "removing what an interrupted operation left");
                remove_all(&path)?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, kind: Kind, id: &str) -> PathBuf {
        self.root.join(kind.dir()).join(id)
    }

    pub fn image(&self, kind: Kind, id: &str) -> PathBuf {
        self.path(kind, id).join(IMAGE)
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, kind: Kind, id: &str) -> io::Result<Option<T>> {
        let file = self.path(kind, id).join(kind.meta_file());
        match fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", file.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", file.display()))),
        }
    }

    pub fn volume(&self, id: &str) -> io::Result<Option<VolumeMeta>> {
        self.read(Kind::Volume, id)
    }

    pub fn snapshot(&self, id: &str) -> io::Result<Option<SnapshotMeta>> {
        self.read(Kind::Snapshot, id)
    }

    fn ids(&self, kind: Kind) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(self.root.join(kind.dir()))? {
            if let Some(name) = entry?.file_name().to_str() {
                ids.push(name.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Every volume, by ID.
    pub fn volumes(&self) -> io::Result<Vec<VolumeMeta>> {
        let mut all = Vec::new();
        for id in self.ids(Kind::Volume)? {
            all.extend(self.volume(&id)?);
        }
        Ok(all)
    }

    /// Every snapshot, by ID.
    pub fn snapshots(&self) -> io::Result<Vec<SnapshotMeta>> {
        let mut all = Vec::new();
        for id in self.ids(Kind::Snapshot)? {
            all.extend(self.snapshot(&id)?);
        }
        Ok(all)
    }

    /// An object's size: its image's length.
    pub fn size(&self, kind: Kind, id: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.image(kind, id))?.len())
    }

    /// The bytes every volume and snapshot (and what is being made) takes.
    pub fn allocated(&self) -> io::Result<u64> {
        let mut total = 0;
        for dir in ["volumes", "snapshots", "staging"] {
            for entry in fs::read_dir(self.root.join(dir))? {
                match fs::metadata(entry?.path().join(IMAGE)) {
                    Ok(meta) => total += meta.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(total)
    }

    /// Makes an object: `fill` writes its image in a staging directory, then
    /// the metadata is written and the directory renamed into place.
    pub fn commit<T: Serialize>(
        &self,
        kind: Kind,
        id: &str,
        meta: &T,
        fill: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<()> {
        let staging = self.root.join("staging").join(id);
        remove_all(&staging)?;
        fs::create_dir(&staging)?;
        fill(&staging.join(IMAGE))?;
        crate::crash::point("commit:filled");
        let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
        write_synced(&staging.join(kind.meta_file()), &json)?;
        sync_dir(&staging)?;
        crate::crash::point("commit:before-rename");
        fs::rename(&staging, self.path(kind, id))?;
        crate::crash::point("commit:renamed");
        sync_dir(&self.root.join(kind.dir()))
    }

    /// Removes an object: one rename out of place, then the files.
    pub fn remove(&self, kind: Kind, id: &str) -> io::Result<()> {
        let deleting = self.root.join("deleting").join(id);
        remove_all(&deleting)?;
        match fs::rename(self.path(kind, id), &deleting) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        sync_dir(&self.root.join(kind.dir()))?;
        crate::crash::point("remove:renamed");
        remove_all(&deleting)
    }
}

fn remove_all(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

pub fn sync_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str) -> VolumeMeta {
        VolumeMeta {
            name: format!("name-{id}"),
            id: id.into(),
            block: false,
            source: None,
            owner: BTreeMap::new(),
        }
    }

    #[test]
    fn an_object_exists_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .commit(Kind::Volume, "vol-a", &meta("vol-a"), |img| {
                fs::write(img, vec![0; 4096])
            })
            .unwrap();
        assert_eq!(store.volume("vol-a").unwrap(), Some(meta("vol-a")));
        assert_eq!(store.size(Kind::Volume, "vol-a").unwrap(), 4096);

        // A fill that fails (a crash while copying, in effect) commits nothing.
        let err = store.commit(Kind::Volume, "vol-b", &meta("vol-b"), |img| {
            fs::write(img, b"partial")?;
            Err(io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(store.volume("vol-b").unwrap(), None);
        assert_eq!(store.volumes().unwrap(), vec![meta("vol-a")]);
        // ...and what it left is counted until a restart removes it.
        assert_eq!(store.allocated().unwrap(), 4096 + 7);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.allocated().unwrap(), 4096);

        // A delete interrupted after its rename: gone, and cleaned on restart.
        fs::rename(
            store.path(Kind::Volume, "vol-a"),
            dir.path().join("deleting/vol-a"),
        )
        .unwrap();
        assert_eq!(store.volume("vol-a").unwrap(), None);
        let store = Store::open(dir.path()).unwrap();
        assert!(
            fs::read_dir(dir.path().join("deleting"))
                .unwrap()
                .next()
                .is_none()
        );
        store.remove(Kind::Volume, "vol-a").unwrap();
    }
}
