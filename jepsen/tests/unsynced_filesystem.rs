//! The `lose-unsynced` nemesis's filesystem, mounted for real: what a crash keeps and drops.
//!
//! Needs root and /dev/fuse (as `karst-jepsen run` does); elsewhere each test says so and
//! passes without checking anything.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use karst_jepsen::cluster::unsynced::UnsyncedMount;

/// A mount over a fresh backing directory, or None (with the reason printed) when this
/// machine cannot mount FUSE filesystems.
fn mount(root: &Path) -> Option<UnsyncedMount> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: mounting FUSE needs root and /dev/fuse");
        return None;
    }
    Some(
        UnsyncedMount::mount(&root.join("synced"), &root.join("data"), "test-")
            .expect("mount the filesystem"),
    )
}

fn contents(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path)
        .expect("open")
        .read_to_end(&mut bytes)
        .expect("read");
    bytes
}

#[test]
fn a_write_that_was_not_synced_is_gone_after_a_crash() {
    let root = tempfile::tempdir().expect("temporary directory");
    let Some(mount) = mount(root.path()) else {
        return;
    };
    let path = root.path().join("data/segment.log");

    // A write without fsync: readable, and held by the filesystem, not on the backing disk.
    let mut file = File::create(&path).expect("create");
    file.write_all(b"not synced").expect("write");
    drop(file);
    assert_eq!(contents(&path), b"not synced");
    assert_eq!(mount.pending_bytes(), 10);
    assert_eq!(
        fs::read(root.path().join("synced/segment.log")).unwrap(),
        b""
    );

    // The crash drops it; the file (metadata, durable at once) stays, empty.
    let report = mount.crash();
    assert_eq!((report.files, report.bytes), (1, 10));
    assert_eq!(report.dropped, [("segment.log".into(), 10)]);
    assert_eq!(contents(&path), b"");
    assert_eq!(fs::metadata(&path).expect("stat").len(), 0);
}

#[test]
fn a_synced_write_survives_a_crash_and_later_unsynced_bytes_do_not() {
    let root = tempfile::tempdir().expect("temporary directory");
    let Some(mount) = mount(root.path()) else {
        return;
    };
    let path = root.path().join("data/segment.log");

    // Synced with fdatasync: on the backing file from then on.
    let mut file = File::create(&path).expect("create");
    file.write_all(b"synced.").expect("write");
    file.sync_data().expect("fdatasync");
    assert_eq!(
        fs::read(root.path().join("synced/segment.log")).unwrap(),
        b"synced."
    );
    // Appended and overwritten without a sync, through another handle.
    file.write_all(b"lost").expect("write");
    let other = OpenOptions::new().write(true).open(&path).expect("open");
    other.write_at(b"S", 0).expect("overwrite");
    drop((file, other));
    assert_eq!(contents(&path), b"Synced.lost");

    let report = mount.crash();
    assert_eq!((report.files, report.bytes), (1, 5));
    assert_eq!(contents(&path), b"synced.");
}

#[test]
fn a_handle_opened_before_a_crash_is_dead_after_it() {
    let root = tempfile::tempdir().expect("temporary directory");
    let Some(mount) = mount(root.path()) else {
        return;
    };
    let path = root.path().join("data/late.log");
    let mut file = File::create(&path).expect("create");
    mount.crash();
    // A write from before the crash that arrives after it must not land.
    assert!(file.write_all(b"late").is_err());
    assert_eq!(mount.pending_bytes(), 0);
}

#[test]
fn renames_and_directories_go_straight_through() {
    let root = tempfile::tempdir().expect("temporary directory");
    let Some(mount) = mount(root.path()) else {
        return;
    };
    let data = root.path().join("data");
    fs::create_dir(data.join("jepsen-0")).expect("mkdir");
    let mut file = File::create(data.join("jepsen-0/tmp")).expect("create");
    file.write_all(b"checkpoint").expect("write");
    file.sync_all().expect("fsync");
    drop(file);
    fs::rename(data.join("jepsen-0"), data.join("jepsen-0.deleted")).expect("rename directory");
    fs::rename(
        data.join("jepsen-0.deleted/tmp"),
        data.join("jepsen-0.deleted/checkpoint"),
    )
    .expect("rename file");
    mount.crash();
    assert_eq!(
        fs::read(root.path().join("synced/jepsen-0.deleted/checkpoint")).unwrap(),
        b"checkpoint"
    );
    let mut names: Vec<_> = fs::read_dir(&data)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["jepsen-0.deleted"]);
}
