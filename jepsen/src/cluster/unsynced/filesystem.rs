//! The FUSE filesystem itself: a passthrough to a backing directory that holds every data
//! write in memory until the file is synced, and forgets it at a crash.
//!
//! Inode numbers are the backing files' own (the backing root's swapped with FUSE's root
//! inode 1). Each inode remembers its parent and name, so a path is rebuilt for every
//! metadata operation and a renamed directory carries its children along. Attributes and
//! entries are never cached by the kernel (TTL 0), and files are opened without
//! `FOPEN_KEEP_CACHE`, so every open after a crash drops the kernel's page cache of the file:
//! a restarted node reads what the backing files hold, plus nothing.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::pending::PendingWrites;

/// How long the kernel may cache entries and attributes: not at all, so a crash (which
/// shrinks files) is seen at once.
const TTL: Duration = Duration::ZERO;
/// FUSE's root inode.
const ROOT_INODE: u64 = 1;
/// Unsynced bytes held per filesystem at most; a write beyond fails with ENOSPC. A node syncs
/// before every acknowledgement, so this is far above what a run holds; it bounds memory if
/// a node stops syncing.
pub const PENDING_BYTES_MAX: u64 = 512 << 20;
/// Deepest directory nesting a path is rebuilt through (a cycle would be a bug).
const DEPTH_MAX: usize = 64;

/// What a crash dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CrashReport {
    pub files: u64,
    pub bytes: u64,
    /// Each file's unsynced bytes, by its path under the mount (`?` for an unlinked file).
    pub dropped: Vec<(PathBuf, u64)>,
}

/// The state shared by the FUSE thread and the harness (which crashes it).
pub struct Shared {
    backing_root: PathBuf,
    /// The backing root's inode number (swapped with [`ROOT_INODE`]).
    backing_root_inode: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Inode → (parent inode, name), for every inode the kernel has looked up.
    names: HashMap<u64, (u64, OsString)>,
    open_files: HashMap<u64, OpenFile>,
    next_handle: u64,
    /// Unsynced writes per inode.
    pending: HashMap<u64, PendingWrites>,
    pending_bytes: u64,
    /// Raised by each crash: a handle opened before it is dead (its I/O fails with EIO).
    crashes: u64,
}

struct OpenFile {
    inode: u64,
    /// The backing file, opened for reading and writing whatever the caller asked (data is
    /// written here only at a sync).
    file: File,
    /// [`State::crashes`] when it was opened.
    crashes: u64,
}

impl Shared {
    pub fn new(backing_root: &Path) -> std::io::Result<Arc<Shared>> {
        let backing_root_inode = fs::metadata(backing_root)?.ino();
        Ok(Arc::new(Shared {
            backing_root: backing_root.to_owned(),
            backing_root_inode,
            state: Mutex::new(State {
                next_handle: 1,
                ..State::default()
            }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a FUSE handler must not wedge the harness's crash and unmount.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops every unsynced write and kills every open handle: what a power loss would leave.
    pub fn crash(&self) -> CrashReport {
        let mut state = self.lock();
        let mut dropped: Vec<(PathBuf, u64)> = state
            .pending
            .iter()
            .filter(|(_, pending)| !pending.is_empty())
            .map(|(inode, pending)| {
                let path = self
                    .path(&state, *inode)
                    .ok()
                    .and_then(|path| path.strip_prefix(&self.backing_root).ok().map(Into::into))
                    .unwrap_or_else(|| PathBuf::from("?"));
                (path, pending.bytes())
            })
            .collect();
        dropped.sort();
        let report = CrashReport {
            files: dropped.len() as u64,
            bytes: state.pending_bytes,
            dropped,
        };
        state.pending.clear();
        state.pending_bytes = 0;
        state.crashes += 1;
        report
    }

    /// Unsynced bytes held now.
    pub fn pending_bytes(&self) -> u64 {
        self.lock().pending_bytes
    }

    /// FUSE inode of a backing inode number, and back (the same swap both ways).
    fn swap_root(&self, inode: u64) -> u64 {
        if inode == self.backing_root_inode {
            ROOT_INODE
        } else if inode == ROOT_INODE {
            self.backing_root_inode
        } else {
            inode
        }
    }

    fn path(&self, state: &State, inode: u64) -> Result<PathBuf, Errno> {
        let mut names = Vec::new();
        let mut current = inode;
        while current != ROOT_INODE {
            let (parent, name) = state.names.get(&current).ok_or(Errno::ENOENT)?;
            names.push(name.clone());
            current = *parent;
            if names.len() > DEPTH_MAX {
                return Err(Errno::ELOOP);
            }
        }
        let mut path = self.backing_root.clone();
        path.extend(names.iter().rev());
        Ok(path)
    }

    fn child_path(&self, state: &State, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(state, parent)?.join(name))
    }

    /// The attributes the kernel sees: the backing file's, with the size the pending writes
    /// extend it to.
    fn attributes(&self, state: &State, metadata: &fs::Metadata) -> FileAttr {
        let inode = self.swap_root(metadata.ino());
        let pending_end = state.pending.get(&inode).map_or(0, PendingWrites::end);
        let size = metadata.size().max(pending_end);
        FileAttr {
            ino: INodeNo(inode),
            size,
            blocks: metadata.blocks().max(size.div_ceil(512)),
            atime: system_time(metadata.atime(), metadata.atime_nsec()),
            mtime: system_time(metadata.mtime(), metadata.mtime_nsec()),
            ctime: system_time(metadata.ctime(), metadata.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: file_type(metadata.file_type()),
            perm: (metadata.mode() & 0o7777) as u16,
            nlink: metadata.nlink() as u32,
            uid: metadata.uid(),
            gid: metadata.gid(),
            rdev: metadata.rdev() as u32,
            blksize: metadata.blksize() as u32,
            flags: 0,
        }
    }

    /// Looks `parent/name` up in the backing directory and remembers the inode's name.
    fn enter(&self, state: &mut State, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let path = self.child_path(state, parent, name)?;
        let metadata = fs::symlink_metadata(&path)?;
        let attributes = self.attributes(state, &metadata);
        state
            .names
            .insert(attributes.ino.0, (parent, name.to_owned()));
        Ok(attributes)
    }

    fn open_handle(&self, state: &mut State, inode: u64, file: File) -> u64 {
        let handle = state.next_handle;
        state.next_handle += 1;
        let crashes = state.crashes;
        state.open_files.insert(
            handle,
            OpenFile {
                inode,
                file,
                crashes,
            },
        );
        handle
    }

    /// The open file behind `handle`, unless a crash killed it.
    fn live(state: &State, handle: FileHandle) -> Result<&OpenFile, Errno> {
        let open = state.open_files.get(&handle.0).ok_or(Errno::EBADF)?;
        if open.crashes != state.crashes {
            return Err(Errno::EIO);
        }
        Ok(open)
    }

    /// Writes the inode's pending bytes to its backing file: they are durable from now on.
    fn sync(&self, state: &mut State, handle: FileHandle) -> Result<(), Errno> {
        let inode = Self::live(state, handle)?.inode;
        let Some(mut pending) = state.pending.remove(&inode) else {
            return Ok(());
        };
        state.pending_bytes -= pending.bytes();
        let file = &Self::live(state, handle)?.file;
        for (offset, bytes) in pending.take() {
            file.write_all_at(&bytes, offset)?;
        }
        Ok(())
    }

    /// Forgets the pending writes of an inode that no name and no handle reaches any more.
    fn drop_unreachable(&self, state: &mut State, inode: u64) {
        let open = state.open_files.values().any(|open| open.inode == inode);
        if !open && !state.names.contains_key(&inode) {
            if let Some(pending) = state.pending.remove(&inode) {
                state.pending_bytes -= pending.bytes();
            }
        }
    }
}

fn system_time(seconds: i64, nanoseconds: i64) -> SystemTime {
    if seconds >= 0 {
        UNIX_EPOCH + Duration::new(seconds as u64, nanoseconds as u32)
    } else {
        UNIX_EPOCH
    }
}

fn file_type(kind: fs::FileType) -> FileType {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        FileType::Directory
    } else if kind.is_symlink() {
        FileType::Symlink
    } else if kind.is_fifo() {
        FileType::NamedPipe
    } else if kind.is_socket() {
        FileType::Socket
    } else if kind.is_block_device() {
        FileType::BlockDevice
    } else if kind.is_char_device() {
        FileType::CharDevice
    } else {
        FileType::RegularFile
    }
}

/// Opens a backing file for reading and writing, with the caller's flags that matter for a
/// backing file (not O_APPEND: writes land at the offsets the kernel gives; not O_DIRECT).
fn open_backing(path: &Path, flags: i32, create_mode: Option<u32>) -> std::io::Result<File> {
    let kept = flags & (libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOFOLLOW);
    let mut options = OpenOptions::new();
    options.read(true).write(true).custom_flags(kept);
    if let Some(mode) = create_mode {
        options.mode(mode);
    }
    options.open(path)
}

/// The filesystem handed to fuser; all its state is in [`Shared`].
pub struct UnsyncedFilesystem(pub Arc<Shared>);

impl fuser::Filesystem for UnsyncedFilesystem {
    fn lookup(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.0.lock();
        match self.0.enter(&mut state, parent.0, name) {
            Ok(attributes) => reply.entry(&TTL, &attributes, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn getattr(&self, _request: &Request, inode: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        let state = self.0.lock();
        let result = self
            .0
            .path(&state, inode.0)
            .and_then(|path| Ok(fs::symlink_metadata(path)?));
        match result {
            Ok(metadata) => reply.attr(&TTL, &self.0.attributes(&state, &metadata)),
            Err(error) => reply.error(error),
        }
    }

    /// Size changes go straight to the backing file (a truncation is metadata, durable at
    /// once) and cut the pending writes; mode changes too; times and owners are ignored.
    fn setattr(
        &self,
        _request: &Request,
        inode: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _handle: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.0.lock();
        let result = (|| -> Result<fs::Metadata, Errno> {
            let path = self.0.path(&state, inode.0)?;
            if let Some(mode) = mode {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if let Some(size) = size {
                OpenOptions::new().write(true).open(&path)?.set_len(size)?;
                if let Some(pending) = state.pending.get_mut(&inode.0) {
                    let before = pending.bytes();
                    pending.truncate(size);
                    state.pending_bytes -= before - pending.bytes();
                }
            }
            Ok(fs::symlink_metadata(&path)?)
        })();
        match result {
            Ok(metadata) => reply.attr(&TTL, &self.0.attributes(&state, &metadata)),
            Err(error) => reply.error(error),
        }
    }

    fn mkdir(
        &self,
        _request: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.0.lock();
        let result = self
            .0
            .child_path(&state, parent.0, name)
            .and_then(|path| {
                Ok(fs::DirBuilder::new()
                    .mode(mode & !umask & 0o7777)
                    .create(path)?)
            })
            .and_then(|()| self.0.enter(&mut state, parent.0, name));
        match result {
            Ok(attributes) => reply.entry(&TTL, &attributes, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn unlink(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.0.lock();
        let result = self.0.child_path(&state, parent.0, name).and_then(|path| {
            let inode = self.0.swap_root(fs::symlink_metadata(&path)?.ino());
            fs::remove_file(&path)?;
            Ok(inode)
        });
        match result {
            Ok(inode) => {
                state.names.remove(&inode);
                self.0.drop_unreachable(&mut state, inode);
                reply.ok()
            }
            Err(error) => reply.error(error),
        }
    }

    fn rmdir(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.0.lock();
        let result = self.0.child_path(&state, parent.0, name).and_then(|path| {
            let inode = self.0.swap_root(fs::symlink_metadata(&path)?.ino());
            fs::remove_dir(&path)?;
            Ok(inode)
        });
        match result {
            Ok(inode) => {
                state.names.remove(&inode);
                reply.ok()
            }
            Err(error) => reply.error(error),
        }
    }

    /// Straight through (durable at once); a file it replaces loses its pending writes.
    fn rename(
        &self,
        _request: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let mut state = self.0.lock();
        let result = (|| -> Result<(u64, Option<u64>), Errno> {
            let from = self.0.child_path(&state, parent.0, name)?;
            let to = self.0.child_path(&state, new_parent.0, new_name)?;
            let moved = self.0.swap_root(fs::symlink_metadata(&from)?.ino());
            let replaced = fs::symlink_metadata(&to)
                .ok()
                .map(|metadata| self.0.swap_root(metadata.ino()));
            fs::rename(&from, &to)?;
            Ok((moved, replaced))
        })();
        match result {
            Ok((moved, replaced)) => {
                if let Some(replaced) = replaced.filter(|inode| *inode != moved) {
                    state.names.remove(&replaced);
                    self.0.drop_unreachable(&mut state, replaced);
                }
                state
                    .names
                    .insert(moved, (new_parent.0, new_name.to_owned()));
                reply.ok()
            }
            Err(error) => reply.error(error),
        }
    }

    fn open(&self, _request: &Request, inode: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.0.lock();
        let result = self
            .0
            .path(&state, inode.0)
            .and_then(|path| Ok(open_backing(&path, flags.0, None)?));
        match result {
            Ok(file) => {
                let handle = self.0.open_handle(&mut state, inode.0, file);
                reply.opened(FileHandle(handle), FopenFlags::empty())
            }
            Err(error) => reply.error(error),
        }
    }

    fn create(
        &self,
        _request: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.0.lock();
        let result = self
            .0
            .child_path(&state, parent.0, name)
            .and_then(|path| {
                Ok(open_backing(
                    &path,
                    flags | libc::O_CREAT,
                    Some(mode & !umask & 0o7777),
                )?)
            })
            .and_then(|file| Ok((file, self.0.enter(&mut state, parent.0, name)?)));
        match result {
            Ok((file, attributes)) => {
                let handle = self.0.open_handle(&mut state, attributes.ino.0, file);
                reply.created(
                    &TTL,
                    &attributes,
                    Generation(0),
                    FileHandle(handle),
                    FopenFlags::empty(),
                )
            }
            Err(error) => reply.error(error),
        }
    }

    /// The backing file's bytes with the pending writes laid over them.
    fn read(
        &self,
        _request: &Request,
        _inode: INodeNo,
        handle: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.0.lock();
        let result = (|| -> Result<Vec<u8>, Errno> {
            let open = Shared::live(&state, handle)?;
            let backing_size = open.file.metadata()?.size();
            let pending = state.pending.get(&open.inode);
            let size_now = backing_size.max(pending.map_or(0, PendingWrites::end));
            let length = (size as u64).min(size_now.saturating_sub(offset)) as usize;
            let mut buffer = vec![0; length];
            let mut filled = 0;
            while filled < length {
                let read = open
                    .file
                    .read_at(&mut buffer[filled..], offset + filled as u64)?;
                if read == 0 {
                    break; // past the backing file's end: zeros, or pending bytes below
                }
                filled += read;
            }
            if let Some(pending) = pending {
                pending.overlay(offset, &mut buffer);
            }
            Ok(buffer)
        })();
        match result {
            Ok(bytes) => reply.data(&bytes),
            Err(error) => reply.error(error),
        }
    }

    /// Held in memory until the file is synced.
    fn write(
        &self,
        _request: &Request,
        _inode: INodeNo,
        handle: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.0.lock();
        let inode = match Shared::live(&state, handle) {
            Ok(open) => open.inode,
            Err(error) => return reply.error(error),
        };
        if state.pending_bytes + data.len() as u64 > PENDING_BYTES_MAX {
            return reply.error(Errno::ENOSPC);
        }
        let pending = state.pending.entry(inode).or_default();
        let before = pending.bytes();
        pending.write(offset, data);
        let after = pending.bytes();
        state.pending_bytes = state.pending_bytes + after - before;
        reply.written(data.len() as u32)
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        reply.ok() // closing is not syncing
    }

    fn release(
        &self,
        _request: &Request,
        inode: INodeNo,
        handle: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.0.lock();
        state.open_files.remove(&handle.0);
        self.0.drop_unreachable(&mut state, inode.0);
        reply.ok()
    }

    /// fsync and fdatasync alike: the file's pending writes become durable.
    fn fsync(
        &self,
        _request: &Request,
        _inode: INodeNo,
        handle: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.0.lock();
        match self.0.sync(&mut state, handle) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    /// Space allocation goes straight through, like a truncation.
    fn fallocate(
        &self,
        _request: &Request,
        _inode: INodeNo,
        handle: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let state = self.0.lock();
        let result = Shared::live(&state, handle).and_then(|open| {
            use std::os::fd::AsRawFd;
            // SAFETY: fallocate(2) on a descriptor we own.
            let code = unsafe {
                libc::fallocate(
                    open.file.as_raw_fd(),
                    mode,
                    offset as libc::off_t,
                    length as libc::off_t,
                )
            };
            if code == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error().into())
            }
        });
        match result {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn opendir(&self, _request: &Request, _inode: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty())
    }

    /// The whole directory is listed on every call; `offset` is an index into it.
    fn readdir(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.0.lock();
        let result = (|| -> Result<Vec<(u64, FileType, OsString)>, Errno> {
            let path = self.0.path(&state, inode.0)?;
            let mut entries = vec![
                (inode.0, FileType::Directory, OsString::from(".")),
                (inode.0, FileType::Directory, OsString::from("..")),
            ];
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                use std::os::unix::fs::DirEntryExt;
                entries.push((
                    self.0.swap_root(entry.ino()),
                    file_type(entry.file_type()?),
                    entry.file_name(),
                ));
            }
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                for (index, (entry_inode, kind, name)) in
                    entries.iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(*entry_inode), index as u64 + 1, *kind, name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(error) => reply.error(error),
        }
    }

    /// Directory entries are durable as soon as they are made, so a directory sync has
    /// nothing to do.
    fn fsyncdir(&self, _: &Request, _: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        reply.ok()
    }

    fn statfs(&self, _request: &Request, _inode: INodeNo, reply: ReplyStatfs) {
        let path = std::ffi::CString::new(self.0.backing_root.as_os_str().as_bytes())
            .expect("a path without NUL");
        // SAFETY: statvfs(3) fills the struct we pass; all-zero is a valid value of it.
        let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
            return reply.error(std::io::Error::last_os_error().into());
        }
        reply.statfs(
            stats.f_blocks,
            stats.f_bfree,
            stats.f_bavail,
            stats.f_files,
            stats.f_ffree,
            stats.f_bsize as u32,
            stats.f_namemax as u32,
            stats.f_frsize as u32,
        )
    }

    fn access(&self, _: &Request, _: INodeNo, _: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok() // nodes run as root
    }
}
