//! `system.interfaces` (the facts' interface reading) and `system.ports` (the
//! kernel's socket tables, with owners found through `/proc/*/fd`, bounded).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::host::read;
use crate::probes::ProbeSources;

/// At most this many processes are searched for socket owners…
const OWNER_PROCESSES: usize = 4096;
/// …and this many file descriptors in all…
const OWNER_FDS: usize = 100_000;
/// …for at most this long; sockets not found by then have no owner.
const OWNER_TIME: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize)]
pub struct Interfaces {
    pub interfaces: Vec<Iface>,
}

#[derive(Debug, Serialize)]
pub struct Iface {
    pub name: String,
    pub mac: Option<String>,
    pub addresses: Vec<String>,
    pub is_up: bool,
    pub is_loopback: bool,
    pub is_virtual: bool,
    pub bytes_sent: u64,
    pub bytes_recv: u64,
}

pub fn interfaces(sources: &ProbeSources) -> Interfaces {
    let list = crate::facts::interfaces(&sources.sys_root.join("class/net"));
    Interfaces {
        interfaces: list
            .into_iter()
            .map(|i| Iface {
                name: i.name,
                mac: i.mac,
                addresses: i.addresses,
                is_up: i.is_up,
                is_loopback: i.is_loopback,
                is_virtual: i.is_virtual,
                bytes_sent: i.bytes_sent,
                bytes_recv: i.bytes_recv,
            })
            .collect(),
    }
}

#[derive(Debug, Serialize)]
pub struct Ports {
    pub ports: Vec<Port>,
    /// The owner search stopped at a bound: some owners may be missing.
    pub owners_incomplete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Port {
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub address: String,
    /// Absent when the owner could not be read (another user's process, bounds).
    pub pid: Option<u32>,
    pub process: Option<String>,
    #[serde(skip)]
    inode: u64,
}

pub fn ports(sources: &ProbeSources) -> Result<Ports, String> {
    let net = sources.host_process().join("net");
    let mut ports = Vec::new();
    let mut any = false;
    for (file, protocol) in [
        ("tcp", "tcp"),
        ("tcp6", "tcp"),
        ("udp", "udp"),
        ("udp6", "udp"),
    ] {
        // IPv6 may be disabled: a missing table is not an error, all four missing is.
        let Ok(text) = fs::read_to_string(net.join(file)) else {
            continue;
        };
        any = true;
        ports.extend(parse_table(&text, protocol));
    }
    if !any {
        read(&net.join("tcp"))?;
    }
    let wanted: BTreeSet<u64> = ports.iter().map(|p| p.inode).filter(|i| *i != 0).collect();
    let (owners, incomplete) = socket_owners(sources, &wanted);
    for p in &mut ports {
        if let Some((pid, name)) = owners.get(&p.inode) {
            p.pid = Some(*pid);
            p.process = Some(name.clone());
        }
    }
    ports.sort();
    ports.dedup();
    Ok(Ports {
        ports,
        owners_incomplete: incomplete,
    })
}

/// Listening sockets of one `/proc/net/{tcp,tcp6,udp,udp6}` table: TCP in state
/// LISTEN (0A); UDP bound with no peer (a "listening" datagram socket).
pub fn parse_table(text: &str, protocol: &'static str) -> Vec<Port> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state, inode) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(9)?);
            let listening = match protocol {
                "tcp" => *state == "0A",
                _ => remote.ends_with(":0000"),
            };
            if !listening {
                return None;
            }
            let (ip, port) = parse_endpoint(local)?;
            Some(Port {
                port,
                protocol,
                address: ip.to_string(),
                pid: None,
                process: None,
                inode: inode.parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:0050` or a 32-digit IPv6 address: 32-bit words in host byte order.
fn parse_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4-mapped address is the v4 address to a reader.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Which process holds each wanted socket inode, searching `/proc/<pid>/fd` within
/// the bounds above; true when a bound cut the search short.
fn socket_owners(
    sources: &ProbeSources,
    wanted: &BTreeSet<u64>,
) -> (HashMap<u64, (u32, String)>, bool) {
    let mut owners = HashMap::new();
    let Ok(entries) = fs::read_dir(&sources.proc_root) else {
        return (owners, true);
    };
    let started = Instant::now();
    let (mut processes, mut fds) = (0usize, 0usize);
    for entry in entries.filter_map(Result::ok) {
        if owners.len() == wanted.len() {
            return (owners, false);
        }
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        processes += 1;
        if processes > OWNER_PROCESSES || fds > OWNER_FDS || started.elapsed() > OWNER_TIME {
            return (owners, true);
        }
        let Ok(fd_dir) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let mut name: Option<String> = None;
        for fd in fd_dir.filter_map(Result::ok) {
            fds += 1;
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target.to_str().and_then(|t| {
                t.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            });
            if let Some(inode) = inode.filter(|i| wanted.contains(i)) {
                let name = name.get_or_insert_with(|| {
                    fs::read_to_string(entry.path().join("comm"))
                        .map(|c| c.trim().to_owned())
                        .unwrap_or_default()
                });
                owners.insert(inode, (pid, name.clone()));
            }
        }
    }
    (owners, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_lines_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:6448 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 6982 1 0000000024826fd1 100 0 0 10 0\n\
   1: 0100007F:E2A4 0100007F:6448 01 00000000:00000000 00:00000000 00000000   106        0 7000 1 0000000024826fd1 100 0 0 10 0\n";
        let ports = parse_table(tcp, "tcp");
        assert_eq!(ports.len(), 1, "established sockets are not listening");
        assert_eq!(
            (ports[0].port, ports[0].address.as_str()),
            (25672, "127.0.0.1")
        );
        assert_eq!(ports[0].inode, 6982);

        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  10: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 0\n";
        let ports = parse_table(udp6, "udp");
        assert_eq!(ports.len(), 1);
        if cfg!(target_endian = "little") {
            assert_eq!(ports[0].address, "::1");
        }
        assert_eq!(ports[0].port, 53);
    }
}
