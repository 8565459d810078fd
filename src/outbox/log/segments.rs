//! The segment files: named after their first commit, created at their full size, and recycled.
//!
//! A segment is written whole with zeros when it is created, and never grows afterwards: a commit
//! overwrites blocks the file already has, so its `fdatasync` writes the data pages and no
//! metadata (no size change, no block allocation through the filesystem's journal), and a full
//! disk shows up when a segment is created, not in the middle of a commit. A deleted segment is
//! kept as the spare and renamed to be the next one, so zeros are written once per file, not once
//! per segment; what it held before is told apart by its lower commit numbers (see `frame.rs`).
//!
//! Where the filesystem allows it, segments are written straight to the disk (`O_DIRECT`): a
//! commit then writes the 512-byte sectors it fills. Through the page cache, an `fdatasync`
//! writes back every 4 KiB page a commit touched, however little of it the commit filled.

use super::LogError;
use super::frame::{PAGE, SECTOR};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Segment files end in this.
const SUFFIX: &str = ".seg";
/// The file a deleted segment is kept as, for the next one.
const SPARE: &str = "spare.seg-free";
/// Zeros are written in pieces of this size.
const ZEROS: usize = 1 << 20;

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Segment {
    /// The number of its first commit (its name).
    pub(super) first: u64,
    pub(super) path: PathBuf,
}

/// The file of the segment whose first commit is `first`.
pub(super) fn path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SUFFIX}"))
}

/// The segments in `dir`, oldest first.
pub(super) fn list(dir: &Path) -> Result<Vec<Segment>, LogError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io("read", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("read", dir, e))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push(Segment {
            first,
            path: entry.path(),
        });
    }
    segments.sort_by_key(|s| s.first);
    Ok(segments)
}

/// How commits reach a segment's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writes {
    /// Straight to the disk, in blocks of `unit` bytes (a sector, or a page where the disk's
    /// blocks are bigger than a sector).
    Direct { unit: usize },
    /// Through the page cache, in pages.
    Buffered,
}

impl Writes {
    /// What a commit is padded to, and the next one starts on.
    pub(super) fn unit(self) -> usize {
        match self {
            Self::Direct { unit } => unit,
            Self::Buffered => PAGE,
        }
    }

    /// Direct writes where the filesystem of the file at `path` takes them, as `statx` tells
    /// (Linux 6.1 and later; ext4, XFS and btrfs answer, tmpfs and older kernels do not).
    pub(super) fn allowed_for(path: &Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return Self::Buffered;
        };
        // SAFETY: `statx` is a plain C struct, for which all zeros is a valid value.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a buffer of the type the call fills, both live for
        // the call.
        let done = unsafe {
            libc::statx(
                libc::AT_FDCWD,
                path.as_ptr(),
                0,
                libc::STATX_DIOALIGN,
                &raw mut stx,
            )
        };
        let offset = stx.stx_dio_offset_align as usize;
        let memory = stx.stx_dio_mem_align as usize;
        if done != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 || memory == 0 || memory > PAGE {
            return Self::Buffered;
        }
        match offset {
            0 => Self::Buffered,
            o if o <= SECTOR => Self::Direct { unit: SECTOR },
            // A disk whose blocks are bigger than a sector, up to a page (a 4Kn disk).
            o if o <= PAGE => Self::Direct { unit: PAGE },
            _ => Self::Buffered,
        }
    }
}

/// Makes segment `first` of `size` bytes (the spare, when it has that size, or a new file of
/// zeros), durably named.
pub(super) fn create(dir: &Path, first: u64, size: u64) -> Result<Segment, LogError> {
    let target = path(dir, first);
    let spare = dir.join(SPARE);
    let reused = std::fs::metadata(&spare).is_ok_and(|m| m.len() == size)
        && std::fs::rename(&spare, &target).is_ok();
    if !reused {
        let tmp = dir.join(format!("{first:020}{SUFFIX}-new"));
        let made = write_zeros(&tmp, size).and_then(|()| {
            std::fs::rename(&tmp, &target).map_err(|e| LogError::io("rename", &tmp, e))
        });
        if let Err(e) = made {
            // A full disk: leave nothing half made behind.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    sync_dir(dir)?;
    Ok(Segment {
        first,
        path: target,
    })
}

/// Opens a segment to append to, as `writes` says, or through the page cache where the
/// filesystem refuses `O_DIRECT` after all; returns how it is written. Its pages are dropped from
/// the page cache first: they were cached in large pieces (the zeros written in megabytes, or
/// the file read whole at start), and on a kernel with large folios (ext4 since Linux 6.16) a
/// commit that changes one 4 KiB page of such a piece dirties, and writes back, all of it — a
/// megabyte per commit, measured.
pub(super) fn open_for_writing(path: &Path, writes: Writes) -> Result<(File, Writes), LogError> {
    let open = |flags| {
        File::options()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(path)
    };
    let (file, writes) = match writes {
        Writes::Direct { .. } => match open(libc::O_DIRECT) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0), Writes::Buffered),
            opened => (opened, writes),
        },
        Writes::Buffered => (open(0), writes),
    };
    let file = file.map_err(|e| LogError::io("open", path, e))?;
    // SAFETY: a plain advice call on a file descriptor this function owns.
    let advised = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    if advised != 0 {
        tracing::debug!(path = %path.display(), error = advised, "posix_fadvise failed");
    }
    Ok((file, writes))
}

fn write_zeros(path: &Path, size: u64) -> Result<(), LogError> {
    let io = |e| LogError::io("create", path, e);
    let mut file = File::create(path).map_err(io)?;
    let zeros = vec![0; ZEROS];
    let mut left = size;
    while left > 0 {
        let piece = usize::try_from(left).map_or(ZEROS, |l| l.min(ZEROS));
        file.write_all(&zeros[..piece]).map_err(io)?;
        left -= piece as u64;
    }
    file.sync_all().map_err(io)
}

/// The size of the spare segment, if there is one: room a new segment takes without more space.
pub(super) fn spare_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(SPARE)).map_or(0, |m| m.len())
}

/// Deletes a segment whose commits are all finished; it becomes the spare when there is none
/// and it has the usual `size`.
pub(super) fn delete(dir: &Path, segment: &Segment, size: u64) -> Result<(), LogError> {
    let spare = dir.join(SPARE);
    let keep = !spare.exists()
        && std::fs::metadata(&segment.path).is_ok_and(|m| m.len() == size)
        && std::fs::rename(&segment.path, &spare).is_ok();
    if !keep {
        std::fs::remove_file(&segment.path)
            .map_err(|e| LogError::io("delete", &segment.path, e))?;
    }
    sync_dir(dir)
}

/// Makes the directory's entries (a new or renamed file) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("sync", dir, e))
}
