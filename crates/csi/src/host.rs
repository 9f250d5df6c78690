//! What the driver does to the node: loop devices, filesystems, mounts,
//! preallocated and copied images. Each call is one host operation; errors
//! name the operation, the object and what the tool said.

use std::{
    collections::HashMap,
    fs, io,
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    process::Command,
};

/// A failed host operation, with what the tool printed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HostError(pub String);

impl From<io::Error> for HostError {
    fn from(e: io::Error) -> Self {
        HostError(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, HostError>;

/// Runs a tool; its stdout on success, else an error with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        HostError(format!(
            "running {program}: {e} (is it installed and on PATH?)"
        ))
    })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(HostError(format!(
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The filesystems of `candidates` this node can make and grow.
pub fn available_filesystems(candidates: &[(&'static str, u64)]) -> Vec<(&'static str, u64)> {
    candidates
        .iter()
        .copied()
        .filter(|(fs, _)| {
            let grow = if *fs == "xfs" {
                "xfs_growfs"
            } else {
                "resize2fs"
            };
            on_path(&format!("mkfs.{fs}")) && on_path(grow)
        })
        .collect()
}

/// Makes `path` an image of `len` bytes, every block allocated: the space a
/// volume is given is taken from the filesystem at once, so a full disk is
/// found by CreateVolume, never by a Pod's write.
pub fn preallocate(path: &Path, len: u64) -> Result<()> {
    let file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    if file.metadata()?.len() < len {
        file.set_len(len)?;
    }
    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len).map_err(|e| {
        HostError(format!(
            "allocating {len} bytes for {}: {e}",
            path.display()
        ))
    })?;
    file.sync_all()?;
    Ok(())
}

/// Copies an image, skipping its holes (a fresh volume is mostly holes even
/// when preallocated: unwritten extents read back as holes).
pub fn sparse_copy(from: &Path, to: &Path) -> Result<()> {
    use rustix::fs::{SeekFrom, seek};
    let src = fs::File::open(from)?;
    let dst = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(to)?;
    let len = src.metadata()?.len();
    let mut offset = 0u64;
    while offset < len {
        let data = match seek(&src, SeekFrom::Data(offset)) {
            Ok(data) => data,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(HostError(format!("reading {}: {e}", from.display()))),
        };
        let hole = seek(&src, SeekFrom::Hole(data))
            .map_err(|e| HostError(format!("reading {}: {e}", from.display())))?;
        let (mut in_off, mut out_off) = (data, data);
        while in_off < hole {
            let chunk = (hole - in_off).min(1 << 30) as usize;
            let copied = rustix::fs::copy_file_range(
                &src,
                Some(&mut in_off),
                &dst,
                Some(&mut out_off),
                chunk,
            )
            .map_err(|e| {
                HostError(format!(
                    "copying {} to {}: {e}",
                    from.display(),
                    to.display()
                ))
            })?;
            if copied == 0 {
                break;
            }
        }
        offset = hole;
    }
    dst.set_len(len)?;
    dst.sync_all()?;
    Ok(())
}

/// Every attached loop device, by its backing file.
pub fn loop_devices() -> Result<HashMap<PathBuf, String>> {
    let mut devices = HashMap::new();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Ok(devices);
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        let Ok(backing) = fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        devices.insert(PathBuf::from(backing.trim_end()), format!("/dev/{name}"));
    }
    Ok(devices)
}

/// The loop device backed by `image`, if one is attached.
pub fn loop_device(image: &Path) -> Result<Option<String>> {
    let image = fs::canonicalize(image)?;
    Ok(loop_devices()?.remove(&image))
}

/// Of `devices` (from [`loop_devices`]), the one backed by `image`.
pub fn device_of(devices: &HashMap<PathBuf, String>, image: &Path) -> Option<String> {
    devices.get(&fs::canonicalize(image).ok()?).cloned()
}

/// The loop device for `image`: the attached one, else a new one.
pub fn attach(image: &Path) -> Result<String> {
    if let Some(dev) = loop_device(image)? {
        return Ok(dev);
    }
    let image = image
        .to_str()
        .ok_or_else(|| HostError(format!("{} is not UTF-8", image.display())))?;
    Ok(run("losetup", &["--find", "--show", image])?
        .trim()
        .to_string())
}

/// Detaches a loop device and waits until it is gone: a device someone else
/// holds open for a moment (udev's probe of a changed device, say) is only
/// marked to detach on its last close, and its image would still look in use.
pub fn detach(dev: &str) -> Result<()> {
    run("losetup", &["--detach", dev])?;
    let backing = format!(
        "/sys/block/{}/loop/backing_file",
        dev.trim_start_matches("/dev/")
    );
    for _ in 0..100 {
        if !Path::new(&backing).exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(HostError(format!(
        "{dev} is still attached 5 s after detaching it: something holds it open"
    )))
}

/// Tells a loop device its image has grown.
pub fn refresh(dev: &str) -> Result<()> {
    run("losetup", &["--set-capacity", dev]).map(drop)
}

/// What a device holds, as blkid's low-level probe sees it: a filesystem's
/// type, or a partition table, or nothing (None). Anything found means the
/// device has data and is never formatted.
pub fn probe(dev: &str) -> Result<Option<String>> {
    let out = Command::new("blkid")
        .args(["--probe", "--output", "export", dev])
        .output()
        .map_err(|e| HostError(format!("running blkid: {e} (is util-linux installed?)")))?;
    // blkid exits 2 when it finds nothing to report.
    if out.status.code() == Some(2) {
        return Ok(None);
    }
    if !out.status.success() {
        return Err(HostError(format!(
            "`blkid --probe {dev}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
    };
    Ok(field("TYPE=").or_else(|| field("PTTYPE=").map(|t| format!("partition table ({t})"))))
}

pub fn mkfs(fs_type: &str, dev: &str) -> Result<()> {
    let program = format!("mkfs.{fs_type}");
    let args: &[&str] = if fs_type == "xfs" {
        &["-q", dev]
    } else {
        &["-q", "-F", dev]
    };
    run(&program, args).map(drop)
}

/// Grows the filesystem on `dev` (mounted at `mount_point`) to its device.
pub fn grow_fs(fs_type: &str, dev: &str, mount_point: &Path) -> Result<()> {
    if fs_type == "xfs" {
        let mp = mount_point
            .to_str()
            .ok_or_else(|| HostError("mount point is not UTF-8".into()))?;
        run("xfs_growfs", &[mp]).map(drop)
    } else {
        run("resize2fs", &[dev]).map(drop)
    }
}

/// The size of the ext2/3/4 filesystem on an unmounted `dev`, from its superblock.
pub fn ext_fs_size(dev: &str) -> Result<u64> {
    let out = run("dumpe2fs", &["-h", dev])?;
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| HostError(format!("dumpe2fs -h {dev} printed no {key}")))
    };
    Ok(field("Block count:")? * field("Block size:")?)
}

/// Grows the unmounted ext2/3/4 filesystem on `dev` to its device: checked
/// first, as resize2fs requires (e2fsck -p exits 1 when it fixed something).
pub fn grow_ext_offline(dev: &str) -> Result<()> {
    let check = Command::new("e2fsck")
        .args(["-f", "-p", dev])
        .output()
        .map_err(|e| HostError(format!("running e2fsck: {e} (is e2fsprogs installed?)")))?;
    if !matches!(check.status.code(), Some(0 | 1)) {
        return Err(HostError(format!(
            "`e2fsck -f -p {dev}` found problems it cannot fix ({}): {}",
            check.status,
            String::from_utf8_lossy(&check.stdout).trim()
        )));
    }
    run("resize2fs", &[dev]).map(drop)
}

pub fn mount(dev: &str, target: &Path, fs_type: &str, options: &[String]) -> Result<()> {
    let target = utf8(target)?;
    let mut args = vec!["-t", fs_type];
    let joined = options.join(",");
    if !joined.is_empty() {
        args.extend(["-o", joined.as_str()]);
    }
    args.extend([dev, target]);
    run("mount", &args).map(drop)
}

/// Bind-mounts `source` on `target`, read-only if asked.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    let (source, target) = (utf8(source)?, utf8(target)?);
    run("mount", &["--bind", source, target])?;
    if read_only && let Err(e) = run("mount", &["-o", "remount,bind,ro", target]) {
        // Never leave a writable mount where a read-only one was asked for.
        let _ = unmount(Path::new(target));
        return Err(e);
    }
    Ok(())
}

/// Unmounts `target`; a path that is not a mount point is left as it is.
pub fn unmount(target: &Path) -> Result<()> {
    if mount_at(target)?.is_none() {
        return Ok(());
    }
    rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty())
        .map_err(|e| HostError(format!("unmounting {}: {e}", target.display())))
}

pub fn freeze(mount_point: &Path) -> Result<()> {
    run("fsfreeze", &["--freeze", utf8(mount_point)?]).map(drop)
}

pub fn thaw(mount_point: &Path) -> Result<()> {
    run("fsfreeze", &["--unfreeze", utf8(mount_point)?]).map(drop)
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| HostError(format!("{} is not UTF-8", path.display())))
}

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The path within the source filesystem (a bind of one file: that file).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub source: String,
    pub fs_type: String,
    pub read_only: bool,
}

/// Parses mountinfo (proc(5)): fields up to the optional ones, " - ", then
/// the filesystem type and source; paths have octal escapes for spaces.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fs_type = right.next()?.to_string();
            let source = unescape(right.next()?);
            Some(Mount {
                root: PathBuf::from(unescape(left.get(3)?)),
                mount_point: PathBuf::from(unescape(left.get(4)?)),
                source,
                fs_type,
                read_only: left.get(5)?.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'),
            );
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn mounts() -> Result<Vec<Mount>> {
    Ok(parse_mountinfo(&fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// The topmost mount at exactly `path`, if any.
pub fn mount_at(path: &Path) -> Result<Option<Mount>> {
    let path = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// Where `dev` is mounted, if anywhere (its first mount).
pub fn mount_of_device(dev: &str) -> Result<Option<Mount>> {
    Ok(mounts()?.into_iter().find(|m| m.source == dev))
}

/// Every place `dev` is mounted or bind-mounted: its filesystem's mounts,
/// and binds of the device node itself (a block volume's publications,
/// which mountinfo shows as the device's file on devtmpfs).
pub fn uses_of_device(dev: &str) -> Result<Vec<PathBuf>> {
    let node = Path::new("/").join(dev.trim_start_matches("/dev/"));
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.source == dev || (m.fs_type == "devtmpfs" && m.root == node))
        .map(|m| m.mount_point)
        .collect())
}

/// Bytes and inodes of the filesystem at `path`.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
}

pub fn usage(path: &Path) -> Result<Usage> {
    let st = rustix::fs::statvfs(path)
        .map_err(|e| HostError(format!("statfs {}: {e}", path.display())))?;
    Ok(Usage {
        total_bytes: st.f_blocks * st.f_frsize,
        available_bytes: st.f_bavail * st.f_frsize,
        used_bytes: (st.f_blocks - st.f_bfree) * st.f_frsize,
        total_inodes: st.f_files,
        free_inodes: st.f_ffree,
    })
}

/// Whether `path` is a block device node.
pub fn is_block_device(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// The size of a block device, from sysfs.
pub fn block_device_size(dev: &str) -> Result<u64> {
    let name = dev.trim_start_matches("/dev/");
    let sectors = fs::read_to_string(format!("/sys/class/block/{name}/size"))?;
    sectors
        .trim()
        .parse::<u64>()
        .map(|s| s * 512)
        .map_err(|e| HostError(format!("size of {dev}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_point_source_type_and_mode() {
        let text = "36 35 98:0 / /mnt\\040one rw,noatime master:1 - ext3 /dev/loop0 rw,errors=continue\n\
                    37 35 98:0 /x /var/lib/t ro,relatime shared:2 master:3 - ext4 /dev/loop1 ro\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts[0],
            Mount {
                root: "/".into(),
                mount_point: "/mnt one".into(),
                source: "/dev/loop0".into(),
                fs_type: "ext3".into(),
                read_only: false
            }
        );
        assert!(mounts[1].read_only);
        assert_eq!(mounts[1].mount_point, PathBuf::from("/var/lib/t"));
    }
}
