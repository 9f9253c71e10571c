//! One conformance suite, run against every backend: what the rest of the
//! system may assume of [`Backend`].

use std::ops::Bound;
use std::sync::Arc;

use super::mem::MemBackend;
use super::{prefix_range, Backend, Batch, Partition, ReadView, StorageError, KEY_BYTES_MAX};

/// A backend under test that can be restarted after a clean persist.
trait Subject {
    fn backend(&self) -> Arc<dyn Backend>;
    /// Drops the running instance and opens the same store again.
    fn restart(&mut self);
}

struct Mem(Arc<MemBackend>);

impl Subject for Mem {
    fn backend(&self) -> Arc<dyn Backend> {
        self.0.clone()
    }
    fn restart(&mut self) {
        self.0.crash();
    }
}

#[cfg(not(madsim))]
struct Fjall {
    dir: tempfile::TempDir,
    be: Option<Arc<super::fjall_backend::FjallBackend>>,
}

#[cfg(not(madsim))]
impl Subject for Fjall {
    fn backend(&self) -> Arc<dyn Backend> {
        self.be.clone().expect("open")
    }
    fn restart(&mut self) {
        self.be = None;
        let be = super::fjall_backend::FjallBackend::open(self.dir.path()).expect("reopen");
        self.be = Some(Arc::new(be));
    }
}

// Under madsim only the in-memory backend is a subject.
#[cfg_attr(madsim, allow(unused_mut))]
fn subjects() -> Vec<(&'static str, Box<dyn Subject>)> {
    let mut v: Vec<(&'static str, Box<dyn Subject>)> =
        vec![("mem", Box::new(Mem(Arc::new(MemBackend::new()))))];
    #[cfg(not(madsim))]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let be = super::fjall_backend::FjallBackend::open(dir.path()).expect("open");
        v.push((
            "fjall",
            Box::new(Fjall {
                dir,
                be: Some(Arc::new(be)),
            }),
        ));
    }
    v
}

fn put(p: Partition, k: &str, v: &str) -> Batch {
    let mut b = Batch::new();
    b.put(p, k.as_bytes().to_vec(), v.as_bytes().to_vec());
    b
}

fn keys(view: &dyn ReadView, p: Partition, range: super::KeyRange, reverse: bool) -> Vec<String> {
    view.scan(p, range, reverse)
        .map(|r| String::from_utf8(r.expect("scan").0).expect("utf8"))
        .collect()
}

const ALL: (Bound<Vec<u8>>, Bound<Vec<u8>>) = (Bound::Unbounded, Bound::Unbounded);

#[test]
fn batch_is_atomic_across_partitions() {
    for (name, s) in subjects() {
        let be = s.backend();
        let mut b = Batch::new();
        b.put(Partition::Rev, b"r1".to_vec(), b"v1".to_vec());
        b.put(Partition::Meta, b"m".to_vec(), b"1".to_vec());
        b.put(Partition::Rev, b"r2".to_vec(), b"v2".to_vec());
        b.delete(Partition::Rev, b"r2".to_vec());
        be.write(b).expect("write");
        assert_eq!(
            be.get(Partition::Rev, b"r1").unwrap(),
            Some(b"v1".to_vec()),
            "{name}"
        );
        assert_eq!(
            be.get(Partition::Rev, b"r2").unwrap(),
            None,
            "{name}: later delete in batch wins"
        );
        assert_eq!(
            be.get(Partition::Meta, b"m").unwrap(),
            Some(b"1".to_vec()),
            "{name}"
        );
        assert_eq!(
            be.get(Partition::Log, b"m").unwrap(),
            None,
            "{name}: partitions are separate"
        );
    }
}

#[test]
fn oversized_key_refuses_the_whole_batch() {
    for (name, s) in subjects() {
        let be = s.backend();
        let mut b = Batch::new();
        b.put(Partition::Rev, b"ok".to_vec(), b"v".to_vec());
        b.put(Partition::Rev, vec![b'k'; KEY_BYTES_MAX + 1], b"v".to_vec());
        match be.write(b) {
            Err(StorageError::KeyTooLarge { len, max }) => {
                assert_eq!((len, max), (KEY_BYTES_MAX + 1, KEY_BYTES_MAX), "{name}")
            }
            other => panic!("{name}: got {other:?}, want KeyTooLarge"),
        }
        assert_eq!(
            be.get(Partition::Rev, b"ok").unwrap(),
            None,
            "{name}: nothing written"
        );
        // The largest allowed key works.
        be.write(put(Partition::Rev, &"k".repeat(KEY_BYTES_MAX), "v"))
            .expect("max-size key");
        assert!(
            be.get(Partition::Rev, &vec![b'k'; KEY_BYTES_MAX + 1])
                .is_err(),
            "{name}"
        );
    }
}

#[test]
fn scans_are_ordered_and_bounded() {
    for (name, s) in subjects() {
        let be = s.backend();
        for k in ["b", "a", "ab", "c", "b\u{0}", "ba"] {
            be.write(put(Partition::KeyLive, k, "x")).unwrap();
        }
        be.write(put(Partition::Meta, "zz", "x")).unwrap();
        let all = keys(be.as_ref(), Partition::KeyLive, ALL, false);
        assert_eq!(all, ["a", "ab", "b", "b\u{0}", "ba", "c"], "{name}");
        let rev = keys(be.as_ref(), Partition::KeyLive, ALL, true);
        assert_eq!(rev, ["c", "ba", "b\u{0}", "b", "ab", "a"], "{name}");
        let r = (
            Bound::Included(b"ab".to_vec()),
            Bound::Excluded(b"ba".to_vec()),
        );
        assert_eq!(
            keys(be.as_ref(), Partition::KeyLive, r.clone(), false),
            ["ab", "b", "b\u{0}"],
            "{name}"
        );
        assert_eq!(
            keys(be.as_ref(), Partition::KeyLive, r, true),
            ["b\u{0}", "b", "ab"],
            "{name}"
        );
        assert_eq!(
            keys(be.as_ref(), Partition::KeyLive, prefix_range(b"b"), false),
            ["b", "b\u{0}", "ba"],
            "{name}"
        );
        let empty = (
            Bound::Included(b"c".to_vec()),
            Bound::Excluded(b"a".to_vec()),
        );
        assert!(
            keys(be.as_ref(), Partition::KeyLive, empty, false).is_empty(),
            "{name}"
        );
    }
}

#[test]
fn snapshot_does_not_see_later_writes() {
    for (name, s) in subjects() {
        let be = s.backend();
        be.write(put(Partition::Rev, "a", "1")).unwrap();
        let snap = be.snapshot();
        be.write(put(Partition::Rev, "a", "2")).unwrap();
        be.write(put(Partition::Rev, "b", "1")).unwrap();
        let mut del = Batch::new();
        del.delete(Partition::Rev, b"a".to_vec());
        be.write(del).unwrap();
        assert_eq!(
            snap.get(Partition::Rev, b"a").unwrap(),
            Some(b"1".to_vec()),
            "{name}"
        );
        assert_eq!(
            keys(snap.as_ref(), Partition::Rev, ALL, false),
            ["a"],
            "{name}"
        );
        assert_eq!(
            keys(be.as_ref(), Partition::Rev, ALL, false),
            ["b"],
            "{name}"
        );
    }
}

#[test]
fn persisted_writes_survive_restart() {
    for (name, mut s) in subjects() {
        {
            let be = s.backend();
            be.write(put(Partition::Log, "1", "entry")).unwrap();
            be.write(put(Partition::Meta, "applied", "1")).unwrap();
            be.persist().expect("persist");
        }
        s.restart();
        let be = s.backend();
        assert_eq!(
            be.get(Partition::Log, b"1").unwrap(),
            Some(b"entry".to_vec()),
            "{name}"
        );
        assert_eq!(
            be.get(Partition::Meta, b"applied").unwrap(),
            Some(b"1".to_vec()),
            "{name}"
        );
    }
}

#[test]
fn mem_crash_loses_exactly_the_unpersisted_writes() {
    let be = MemBackend::new();
    be.write(put(Partition::Log, "1", "a")).unwrap();
    be.persist().unwrap();
    be.write(put(Partition::Log, "2", "b")).unwrap();
    let mut del = Batch::new();
    del.delete(Partition::Log, b"1".to_vec());
    be.write(del).unwrap();
    assert_eq!(be.unpersisted_batches(), 2);
    be.crash();
    assert_eq!(be.get(Partition::Log, b"1").unwrap(), Some(b"a".to_vec()));
    assert_eq!(be.get(Partition::Log, b"2").unwrap(), None);
    assert_eq!(be.unpersisted_batches(), 0);
}

#[test]
fn mem_failed_persist_poisons_until_restart() {
    let be = MemBackend::new();
    be.write(put(Partition::Log, "1", "a")).unwrap();
    be.fail_next_persist();
    assert!(matches!(be.persist(), Err(StorageError::Io { .. })));
    assert!(matches!(
        be.write(put(Partition::Log, "2", "b")),
        Err(StorageError::Poisoned)
    ));
    assert!(matches!(be.persist(), Err(StorageError::Poisoned)));
    be.crash();
    assert_eq!(
        be.get(Partition::Log, b"1").unwrap(),
        None,
        "never persisted"
    );
    be.write(put(Partition::Log, "2", "b"))
        .expect("a restarted process writes again");
}

#[cfg(not(madsim))]
mod data_dir {
    use super::super::fjall_backend::{FjallBackend, FORMAT_VERSION};
    use super::super::{Backend, Batch, Partition, ReadView, StorageError};
    use std::fs;

    #[test]
    fn refuses_an_etcd_data_dir_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("member/wal")).unwrap();
        fs::write(dir.path().join("member/wal/0.wal"), b"etcd").unwrap();
        match FjallBackend::open(dir.path()) {
            Err(StorageError::ForeignDataDir { reason, .. }) => {
                assert!(reason.contains("etcd"), "{reason}")
            }
            Err(e) => panic!("got {e}, want ForeignDataDir"),
            Ok(_) => panic!("opened an etcd data dir"),
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["member"], "nothing was added");
        assert_eq!(
            fs::read(dir.path().join("member/wal/0.wal")).unwrap(),
            b"etcd"
        );
    }

    #[test]
    fn refuses_a_non_empty_unknown_dir() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        assert!(matches!(
            FjallBackend::open(dir.path()),
            Err(StorageError::ForeignDataDir { .. })
        ));
    }

    #[test]
    fn refuses_a_newer_format() {
        let dir = tempfile::tempdir().unwrap();
        drop(FjallBackend::open(dir.path()).expect("create"));
        fs::write(
            dir.path().join("concord.format"),
            b"concord data format 99\n",
        )
        .unwrap();
        match FjallBackend::open(dir.path()) {
            Err(StorageError::NewerFormat {
                found, supported, ..
            }) => assert_eq!((found, supported), (99, FORMAT_VERSION)),
            Err(e) => panic!("got {e}, want NewerFormat"),
            Ok(_) => panic!("opened a newer format"),
        }
    }

    #[test]
    fn refuses_an_older_format_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        drop(FjallBackend::open(dir.path()).expect("create"));
        let marker = dir.path().join("concord.format");
        fs::write(&marker, b"concord data format 1\n").unwrap();
        match FjallBackend::open(dir.path()) {
            Err(e @ StorageError::OlderFormat { found: 1, .. }) => {
                assert!(e.to_string().contains("no migration"), "{e}")
            }
            Err(e) => panic!("got {e}, want OlderFormat"),
            Ok(_) => panic!("opened an older format"),
        }
        assert_eq!(fs::read(&marker).unwrap(), b"concord data format 1\n");
    }

    #[test]
    fn opens_format_2_and_marks_it_format_3() {
        let dir = tempfile::tempdir().unwrap();
        let be = FjallBackend::open(dir.path()).expect("create");
        let mut b = Batch::new();
        b.put(Partition::Meta, b"k".to_vec(), b"v".to_vec());
        be.write(b).expect("write");
        be.persist().expect("persist");
        drop(be);
        let marker = dir.path().join("concord.format");
        fs::write(&marker, b"concord data format 2\n").unwrap();
        let be = FjallBackend::open(dir.path()).expect("a format 2 dir opens");
        assert_eq!(
            be.get(Partition::Meta, b"k").expect("get"),
            Some(b"v".to_vec())
        );
        assert_eq!(
            fs::read(&marker).unwrap(),
            format!("concord data format {FORMAT_VERSION}\n").into_bytes(),
            "marked with the format it is now written in"
        );
    }

    #[test]
    fn creates_a_missing_dir_and_reopens_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b");
        drop(FjallBackend::open(&path).expect("create"));
        assert!(path.join("concord.format").exists());
        drop(FjallBackend::open(&path).expect("reopen"));
    }
}
