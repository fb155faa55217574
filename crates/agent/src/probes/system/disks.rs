//! `system.disks`: the mount table (ours, or the host init's in a container) with
//! the size of each real filesystem from `statvfs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::host::read;
use crate::probes::ProbeSources;

/// Filesystem types that hold no user data: kernel views, memory-backed scratch
/// space and container layers (a Docker host has one overlay per container).
const VIRTUAL: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

#[derive(Debug, Serialize)]
pub struct Disks {
    pub mounts: Vec<Mount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mount {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    /// Absent when `statvfs` could not reach the mount point.
    pub size_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    /// What an unprivileged user may still write.
    pub available_bytes: Option<u64>,
    pub used_percent: Option<f64>,
}

pub fn disks(sources: &ProbeSources) -> Result<Disks, String> {
    let table = read(&sources.host_process().join("mounts"))?;
    // A later mount over the same point hides the earlier one.
    let mut by_point: BTreeMap<String, Mount> = BTreeMap::new();
    for (device, point, fs_type) in parse_mounts(&table) {
        // The root of a container is an overlay: keep it, it is "/" after all.
        if VIRTUAL.contains(&fs_type.as_str()) && point != "/" {
            continue;
        }
        by_point.insert(
            point.clone(),
            Mount {
                mount_point: point,
                device,
                fs_type,
                size_bytes: None,
                used_bytes: None,
                available_bytes: None,
                used_percent: None,
            },
        );
    }
    let mounts = by_point
        .into_values()
        .map(|mut m| {
            if let Some((size, used, avail)) = usage(sources, &m.mount_point) {
                m.size_bytes = Some(size);
                m.used_bytes = Some(used);
                m.available_bytes = Some(avail);
                // Like df: the share of what users can have that is in use.
                let usable = used + avail;
                m.used_percent =
                    (usable > 0).then(|| super::host::round1(100.0 * used as f64 / usable as f64));
            }
            m
        })
        .collect();
    Ok(Disks { mounts })
}

/// (device, mount point, type) per line; octal escapes (`\040` for a space) undone.
fn parse_mounts(table: &str) -> Vec<(String, String, String)> {
    table
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some((
                unescape(f.next()?),
                unescape(f.next()?),
                f.next()?.to_owned(),
            ))
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (size, used, available) in bytes; in a container through the host init's root.
fn usage(sources: &ProbeSources, mount_point: &str) -> Option<(u64, u64, u64)> {
    let path = if sources.host_mounted {
        sources
            .host_process()
            .join("root")
            .join(mount_point.trim_start_matches('/'))
    } else {
        PathBuf::from(mount_point)
    };
    let st = rustix::fs::statvfs(&path).ok()?;
    let frsize = st.f_frsize.max(1);
    let size = st.f_blocks.saturating_mul(frsize);
    let free = st.f_bfree.saturating_mul(frsize);
    let avail = st.f_bavail.saturating_mul(frsize);
    Some((size, size.saturating_sub(free), avail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_lines_with_escapes() {
        let table = "/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 /mnt/my\\040disk xfs rw 0 0\nbad\n";
        let rows = parse_mounts(table);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].1, "/mnt/my disk");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("tail\\04"), "tail\\04");
    }
}
