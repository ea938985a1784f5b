//! Which disk holds the data directory, and how full it is: what a message about a full
//! disk names, so that an operator knows where to make room.

use std::path::{Path, PathBuf};

/// The file system holding a path, as far as the system says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Where it is mounted (`/`, `/srv/flamenco`…); `None` when `/proc/mounts` cannot tell.
    pub mount_point: Option<PathBuf>,
    /// Its type and device, e.g. `ext4 /dev/sdb1`.
    pub kind: Option<String>,
    /// Bytes available to this process, and the total size.
    pub available: Option<u64>,
    pub total: Option<u64>,
}

impl Disk {
    /// The disk holding `path` (an existing file or directory).
    pub fn of(path: &Path) -> Disk {
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mount = std::fs::read_to_string("/proc/mounts")
            .ok()
            .and_then(|mounts| mount_of(&abs, &mounts));
        let stats = fs4::statvfs(&abs).ok();
        Disk {
            mount_point: mount.as_ref().map(|m| m.0.clone()),
            kind: mount.map(|m| m.1),
            available: stats.as_ref().map(|s| s.available_space()),
            total: stats.map(|s| s.total_space()),
        }
    }

    /// `the file system mounted at /srv (ext4 /dev/sdb1, 0 B of 8.0 MiB free)`, leaving out
    /// what is not known.
    pub fn describe(&self) -> String {
        let mut out = match &self.mount_point {
            Some(m) => format!("the file system mounted at {}", m.display()),
            None => "its file system".to_string(),
        };
        let mut details = Vec::new();
        if let Some(kind) = &self.kind {
            details.push(kind.clone());
        }
        if let (Some(available), Some(total)) = (self.available, self.total) {
            details.push(format!(
                "{} of {} free",
                human_bytes(available),
                human_bytes(total)
            ));
        }
        if !details.is_empty() {
            out.push_str(&format!(" ({})", details.join(", ")));
        }
        out
    }
}

/// The longest mount point in `/proc/mounts` text that contains `abs`, with
/// `"<type> <device>"`. Octal escapes in mount points (`\040` for a space) are decoded.
fn mount_of(abs: &Path, mounts: &str) -> Option<(PathBuf, String)> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            let point = PathBuf::from(unescape(fields.next()?));
            let kind = fields.next()?;
            abs.starts_with(&point)
                .then(|| (point, format!("{kind} {device}")))
        })
        .max_by_key(|(point, _)| point.as_os_str().len())
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(oct, 8) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `512 B`, `3.5 KiB`, `8.0 MiB`, `1.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
tmpfs /srv/flamenco\\040data tmpfs rw,size=8192k 0 0
/dev/sdb1 /srv ext4 rw 0 0
";

    #[test]
    fn the_longest_containing_mount_point_wins() {
        let (point, kind) = mount_of(Path::new("/srv/flamenco data/db/x"), MOUNTS).expect("found");
        assert_eq!(point, PathBuf::from("/srv/flamenco data"));
        assert_eq!(kind, "tmpfs tmpfs");
        let (point, kind) = mount_of(Path::new("/srv/other"), MOUNTS).expect("found");
        assert_eq!(point, PathBuf::from("/srv"));
        assert_eq!(kind, "ext4 /dev/sdb1");
        let (point, _) = mount_of(Path::new("/home/x"), MOUNTS).expect("found");
        assert_eq!(point, PathBuf::from("/"));
        // `/srv` does not contain `/srvx`.
        let (point, _) = mount_of(Path::new("/srvx"), MOUNTS).expect("found");
        assert_eq!(point, PathBuf::from("/"));
    }

    #[test]
    fn descriptions_leave_out_what_is_unknown() {
        let disk = Disk {
            mount_point: Some("/data".into()),
            kind: Some("ext4 /dev/sdb1".into()),
            available: Some(0),
            total: Some(8 << 20),
        };
        assert_eq!(
            disk.describe(),
            "the file system mounted at /data (ext4 /dev/sdb1, 0 B of 8.0 MiB free)"
        );
        let unknown = Disk {
            mount_point: None,
            kind: None,
            available: None,
            total: None,
        };
        assert_eq!(unknown.describe(), "its file system");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
