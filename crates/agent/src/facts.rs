//! Host facts the agent reports at enrollment and in its sessions (SPEC §8): hostname,
//! OS, architecture, the address of the route toward the hub, and network interfaces.
//!
//! Invariant: collecting facts never fails. Anything that cannot be read becomes
//! "unknown", an empty string, `false` or zero, because a host with an odd `/sys` must
//! still be able to enroll. Every file location is passed in ([`FactSources`]) so that
//! containers can point at the host's files and tests at a fake tree.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};

use muster_proto::{HostFacts, Interface};

const UNKNOWN: &str = "unknown";
const ETC_OS_RELEASE: &str = "/etc/os-release";
const DEFAULT_HOSTNAME_FILE: &str = "/host-hostname";
const DEFAULT_OS_RELEASE_FILE: &str = "/host-os-release";
const DEFAULT_SYS_CLASS_NET: &str = "/sys/class/net";

/// `IFF_UP` and `IFF_LOOPBACK` from `<net/if.h>`, as found in `/sys/class/net/*/flags`.
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

/// Where facts are read from. In a container the host's files are bind-mounted, so the
/// agent reports the host rather than the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactSources {
    /// Read before the OS hostname, which in a container is the container's.
    pub hostname_file: Option<PathBuf>,
    /// Read before `/etc/os-release`, which in a container describes the image.
    pub os_release_file: Option<PathBuf>,
    /// Base of the per-interface attribute dirs; missing on non-Linux systems.
    pub sys_class_net: PathBuf,
}

impl FactSources {
    /// `MUSTER_HOST_HOSTNAME_FILE` (default `/host-hostname` when present),
    /// `MUSTER_HOST_OS_RELEASE_FILE` (default `/host-os-release` when present),
    /// `/sys/class/net`.
    pub fn from_env() -> Self {
        Self {
            hostname_file: pick_source(
                std::env::var_os("MUSTER_HOST_HOSTNAME_FILE"),
                Path::new(DEFAULT_HOSTNAME_FILE),
            ),
            os_release_file: pick_source(
                std::env::var_os("MUSTER_HOST_OS_RELEASE_FILE"),
                Path::new(DEFAULT_OS_RELEASE_FILE),
            ),
            sys_class_net: PathBuf::from(DEFAULT_SYS_CLASS_NET),
        }
    }
}

/// An explicit (non-empty) setting wins even if the file is missing, so that a typo is
/// visible as a fallback rather than silently ignored; the default counts only if present.
pub(crate) fn pick_source(env: Option<OsString>, default: &Path) -> Option<PathBuf> {
    match env.filter(|v| !v.is_empty()) {
        Some(v) => Some(PathBuf::from(v)),
        None => default.exists().then(|| default.to_path_buf()),
    }
}

/// Collect the host facts. `hub_addr` is the hub's "host:port": `ip` is the local address
/// of a UDP socket connected toward it (nothing is sent), and is empty when `hub_addr` is
/// `None` or has no route. Resolving a host name may block on DNS, so async callers
/// should run this on a blocking thread. Never fails.
pub fn collect(sources: &FactSources, hub_addr: Option<&str>) -> HostFacts {
    let ip = hub_addr.and_then(route_ip);
    let mut interfaces = interfaces(&sources.sys_class_net);
    if let Some(ip) = ip {
        mark_management(&mut interfaces, ip);
    }
    HostFacts {
        hostname: hostname(sources.hostname_file.as_deref()),
        os_info: host_os_info(sources.os_release_file.as_deref()),
        arch: arch().to_owned(),
        ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
        interfaces,
    }
}

/// The interfaces under `sys_class_net` with the addresses `getifaddrs` knows
/// (none marked as the management one). Shared with the `system.interfaces` probe.
pub(crate) fn interfaces(sys_class_net: &Path) -> Vec<Interface> {
    let mut interfaces = read_sys_interfaces(sys_class_net);
    match if_addrs::get_if_addrs() {
        Ok(addrs) => merge_addresses(&mut interfaces, &addrs),
        Err(e) => tracing::debug!(error = %e, "cannot list interface addresses"),
    }
    interfaces
}

/// `PRETTY_NAME` from `host_file`, else `/etc/os-release`, else the OS family.
pub(crate) fn host_os_info(host_file: Option<&Path>) -> String {
    let mut files: Vec<&Path> = host_file.into_iter().collect();
    files.push(Path::new(ETC_OS_RELEASE));
    os_info(&files)
}

/// The architecture in the names release artifacts use: `x86_64`, `arm64`, `armv7`,
/// `i386`, `riscv64`, `ppc64le`, `s390x`, else Rust's own name.
pub fn arch() -> &'static str {
    map_arch(std::env::consts::ARCH, cfg!(target_endian = "little"))
}

fn map_arch(rust_arch: &'static str, little_endian: bool) -> &'static str {
    match rust_arch {
        "aarch64" => "arm64",
        "arm" => "armv7",
        "x86" => "i386",
        "powerpc64" if little_endian => "ppc64le",
        other => other,
    }
}

pub(crate) fn hostname(file: Option<&Path>) -> String {
    file.and_then(|path| fs::read_to_string(path).ok())
        .and_then(|text| first_line(&text))
        .or_else(|| {
            hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .and_then(|h| first_line(&h))
        })
        .unwrap_or_else(|| UNKNOWN.to_owned())
}

/// The first non-blank line, trimmed: a hostname file's name. Public for the fuzz
/// harness.
#[doc(hidden)]
pub fn first_line(text: &str) -> Option<String> {
    text.lines().map(fact_text).find(|line| !line.is_empty())
}

/// A text fact in the form the hub accepts (SPEC §8): control characters turned
/// into spaces, invisible ones (bidi overrides, zero-width) dropped, no surrounding
/// space, at most `MAX_NAME_LEN` bytes. A host's files are not the agent's to vouch
/// for, and one fact the hub refuses would stop the host enrolling at all (found by
/// the `fact_files` fuzz target: a hostname file holding NUL bytes).
fn fact_text(raw: &str) -> String {
    let kept: String = raw
        .chars()
        .filter(|c| !muster_proto::is_invisible(*c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let kept = kept.trim();
    let mut end = kept.len().min(muster_proto::MAX_NAME_LEN);
    while !kept.is_char_boundary(end) {
        end -= 1;
    }
    kept[..end].trim_end().to_owned()
}

/// `PRETTY_NAME` from the first file that has one, else the OS family.
fn os_info(files: &[&Path]) -> String {
    files
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .find_map(|text| pretty_name(&text))
        .unwrap_or_else(|| std::env::consts::OS.to_owned())
}

/// os-release is a shell-compatible assignment list; values may be quoted with `"` or `'`.
/// Public for the fuzz harness.
#[doc(hidden)]
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .filter_map(|line| line.trim().strip_prefix("PRETTY_NAME="))
        .map(|value| fact_text(&unquote(value)))
        .find(|value| !value.is_empty())
}

fn unquote(raw: &str) -> String {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let inner = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    // Inside double quotes os-release allows backslash escapes of `"`, `\`, `$` and `` ` ``.
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('"' | '\\' | '$' | '`'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out.trim().to_owned()
}

/// The local address the kernel would use toward `hub_addr`. `connect` on UDP only picks
/// a route; no packet leaves the host.
fn route_ip(hub_addr: &str) -> Option<IpAddr> {
    let targets = hub_addr.to_socket_addrs().ok()?;
    targets.into_iter().find_map(|target| {
        let unspecified: IpAddr = match target {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let socket = UdpSocket::bind((unspecified, 0)).ok()?;
        socket.connect(target).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_unspecified()).then_some(ip)
    })
}

/// Read `<base>/<ifname>/…` for every interface; an unreadable attribute reads as
/// false/zero. Sorted by name so reports are stable. Public for the fuzz harness.
#[doc(hidden)]
pub fn read_sys_interfaces(base: &Path) -> Vec<Interface> {
    let Ok(entries) = fs::read_dir(base) else {
        return Vec::new();
    };
    let mut interfaces: Vec<Interface> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            reportable_name(&name).then(|| read_sys_interface(&entry.path(), name))
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    interfaces
}

fn read_sys_interface(dir: &Path, name: String) -> Interface {
    let attr = |file: &str| {
        fs::read_to_string(dir.join(file))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let flags = attr("flags")
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    // `operstate` is "unknown" for lo and many tunnels, which then go by the admin flag.
    let is_up = match attr("operstate").as_deref() {
        Some("up") => true,
        Some("unknown") | None => flags & IFF_UP != 0,
        Some(_) => false,
    };
    let mac = attr("address").filter(|mac| {
        is_hardware_address(mac) && mac.chars().any(|c| c.is_ascii_hexdigit() && c != '0')
    });
    let counter = |file: &str| attr(file).and_then(|v| v.parse().ok()).unwrap_or(0);
    // Physical devices have a `device` link to their bus; virtual ones live under
    // /sys/devices/virtual, which is where the class entry's symlink points.
    let under_virtual = fs::canonicalize(dir)
        .map(|real| real.to_string_lossy().contains("/devices/virtual/"))
        .unwrap_or(false);
    Interface {
        is_loopback: flags & IFF_LOOPBACK != 0 || name == "lo",
        is_virtual: under_virtual || !dir.join("device").exists(),
        is_wireless: dir.join("wireless").exists() || dir.join("phy80211").exists(),
        mac: mac.map(|m| m.to_ascii_lowercase()),
        is_up,
        bytes_sent: counter("statistics/tx_bytes"),
        bytes_recv: counter("statistics/rx_bytes"),
        addresses: Vec::new(),
        is_management: false,
        name,
    }
}

/// Whether an interface name is one the hub takes: printable, no invisible
/// characters, no surrounding space, at most 64 bytes. The kernel allows control
/// characters in names; one such interface made the hub refuse the whole report
/// and the host could not enroll (found by the `sys_net` fuzz target), so it is
/// left out, as renaming it would report an interface that does not exist.
fn reportable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.trim() == name
        && !name
            .chars()
            .any(|c| c.is_control() || muster_proto::is_invisible(c))
}

/// Whether `mac` is a hardware address as the hub takes one: 6 to 20 hex pairs
/// (Ethernet, EUI-64, InfiniBand). ipip, gre and sit tunnels show their 4-byte IPv4
/// endpoint in `address`; reported as a MAC, the hub refused the whole report and
/// the host could not enroll (found by the `sys_net` fuzz target).
fn is_hardware_address(mac: &str) -> bool {
    let pairs: Vec<&str> = mac.split(':').collect();
    (6..=20).contains(&pairs.len())
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Attach each address to its interface. IPv4 alias labels (`eth0:1`) belong to their
/// base interface. Interfaces unknown to /sys (non-Linux) are added with what
/// `getifaddrs` knows.
fn merge_addresses(interfaces: &mut Vec<Interface>, addrs: &[if_addrs::Interface]) {
    let mut extra: BTreeMap<String, Interface> = BTreeMap::new();
    for addr in addrs {
        let base = addr.name.split(':').next().unwrap_or(&addr.name);
        if !reportable_name(base) {
            continue;
        }
        let ip = addr.ip().to_string();
        let iface = match interfaces.iter_mut().find(|i| i.name == base) {
            Some(iface) => iface,
            None => extra.entry(base.to_owned()).or_insert_with(|| Interface {
                name: base.to_owned(),
                is_up: addr.is_oper_up(),
                is_loopback: addr.is_loopback(),
                ..Interface::default()
            }),
        };
        if !iface.addresses.contains(&ip) {
            iface.addresses.push(ip);
        }
    }
    interfaces.extend(extra.into_values());
}

fn mark_management(interfaces: &mut [Interface], ip: IpAddr) {
    for iface in interfaces {
        iface.is_management = iface
            .addresses
            .iter()
            .any(|a| a.parse::<IpAddr>().ok() == Some(ip));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn hostname_file_takes_precedence() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("hostname");
        fs::write(&file, "\n  host-a \nsecond\n").unwrap();
        assert_eq!(hostname(Some(&file)), "host-a");

        let os = hostname(None);
        assert!(!os.is_empty());
        fs::write(&file, "\n \n").unwrap();
        assert_eq!(hostname(Some(&file)), os, "empty file falls back to the OS");
        assert_eq!(hostname(Some(&tmp.path().join("missing"))), os);
    }

    #[test]
    fn pick_source_prefers_env_then_present_default() {
        let tmp = tempfile::tempdir().unwrap();
        let default = tmp.path().join("host-hostname");
        assert_eq!(pick_source(None, &default), None);
        fs::write(&default, "h").unwrap();
        assert_eq!(pick_source(None, &default), Some(default.clone()));
        assert_eq!(
            pick_source(Some("".into()), &default),
            Some(default.clone())
        );
        assert_eq!(
            pick_source(Some("/elsewhere".into()), &default),
            Some(PathBuf::from("/elsewhere"))
        );
    }

    #[test]
    fn os_release_parsing() {
        assert_eq!(
            pretty_name("NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            pretty_name("PRETTY_NAME='Alpine Linux v3.20'").as_deref(),
            Some("Alpine Linux v3.20")
        );
        assert_eq!(pretty_name("PRETTY_NAME=Plain").as_deref(), Some("Plain"));
        assert_eq!(
            pretty_name(r#"PRETTY_NAME="Say \"hi\"""#).as_deref(),
            Some(r#"Say "hi""#)
        );
        assert_eq!(pretty_name("NAME=x\nPRETTY_NAME=\"\"\n"), None);
        assert_eq!(pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn facts_from_files_are_text_the_hub_accepts() {
        assert_eq!(
            pretty_name("PRETTY_NAME=' Debian\tGNU\u{202E}/Linux '").as_deref(),
            Some("Debian GNU/Linux")
        );
        assert_eq!(first_line("\0\0\nweb-01\0x\n").as_deref(), Some("web-01 x"));
        let long = format!("PRETTY_NAME={}", "é".repeat(200));
        assert_eq!(pretty_name(&long).map(|p| p.len()), Some(252));
        assert!(is_hardware_address("52:54:00:ab:cd:ef"));
        assert!(
            !is_hardware_address("c0:a8:01:01"),
            "a gre tunnel's endpoint"
        );
        assert!(reportable_name("eth0") && reportable_name("wlp2s0"));
        assert!(!reportable_name("eth\u{1}0") && !reportable_name("x\u{200B}"));
    }

    #[test]
    fn os_info_falls_back_through_files() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host-os-release");
        let etc = tmp.path().join("os-release");
        fs::write(&etc, "PRETTY_NAME=\"Image OS\"\n").unwrap();
        assert_eq!(os_info(&[&host, &etc]), "Image OS", "missing host file");
        fs::write(&host, "NAME=NoPretty\n").unwrap();
        assert_eq!(
            os_info(&[&host, &etc]),
            "Image OS",
            "host file without PRETTY_NAME"
        );
        fs::write(&host, "PRETTY_NAME=\"Host OS\"\n").unwrap();
        assert_eq!(os_info(&[&host, &etc]), "Host OS");
        assert_eq!(os_info(&[]), std::env::consts::OS);
    }

    fn write(path: &Path, body: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }

    /// A fake `/sys` with a physical NIC, a wireless NIC, loopback and a bridge.
    fn fake_sys(root: &Path) -> PathBuf {
        let class = root.join("class/net");
        fs::create_dir_all(&class).unwrap();

        let eth0 = class.join("eth0");
        write(&eth0.join("address"), "52:54:00:AB:CD:EF\n");
        write(&eth0.join("operstate"), "up\n");
        write(&eth0.join("flags"), "0x1003\n");
        write(&eth0.join("statistics/tx_bytes"), "1234\n");
        write(&eth0.join("statistics/rx_bytes"), "5678\n");
        fs::create_dir(eth0.join("device")).unwrap();

        let wlan0 = class.join("wlan0");
        write(&wlan0.join("address"), "aa:bb:cc:dd:ee:ff\n");
        write(&wlan0.join("operstate"), "down\n");
        write(&wlan0.join("flags"), "0x1003\n");
        fs::create_dir(wlan0.join("device")).unwrap();
        fs::create_dir(wlan0.join("phy80211")).unwrap();

        let lo = class.join("lo");
        write(&lo.join("address"), "00:00:00:00:00:00\n");
        write(&lo.join("operstate"), "unknown\n");
        write(&lo.join("flags"), "0x9\n");

        // Like the real tree: the class entry is a symlink into devices/virtual, and a
        // stray `device` entry must not make it physical.
        let br = root.join("devices/virtual/net/br0");
        write(&br.join("address"), "02:42:ac:11:00:01\n");
        write(&br.join("operstate"), "down\n");
        write(&br.join("flags"), "0x1002\n");
        fs::create_dir(br.join("device")).unwrap();
        std::os::unix::fs::symlink(&br, class.join("br0")).unwrap();
        class
    }

    #[test]
    fn sys_tree_classification() {
        let tmp = tempfile::tempdir().unwrap();
        let ifaces = read_sys_interfaces(&fake_sys(tmp.path()));
        let names: Vec<_> = ifaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["br0", "eth0", "lo", "wlan0"]);
        let [br0, eth0, lo, wlan0] = &ifaces[..] else {
            unreachable!()
        };

        assert_eq!(eth0.mac.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert!(eth0.is_up && !eth0.is_loopback && !eth0.is_virtual && !eth0.is_wireless);
        assert_eq!((eth0.bytes_sent, eth0.bytes_recv), (1234, 5678));

        assert!(wlan0.is_wireless && !wlan0.is_virtual && !wlan0.is_up);

        assert_eq!(lo.mac, None, "all-zero MAC omitted");
        assert!(lo.is_loopback && lo.is_up && lo.is_virtual, "{lo:?}");
        assert_eq!((lo.bytes_sent, lo.bytes_recv), (0, 0));

        assert!(br0.is_virtual && !br0.is_up && !br0.is_loopback);
        assert!(read_sys_interfaces(&tmp.path().join("absent")).is_empty());
    }

    #[test]
    fn management_interface_carries_the_ip() {
        let mut ifaces = vec![
            Interface {
                name: "lo".into(),
                addresses: vec!["127.0.0.1".into(), "::1".into()],
                ..Interface::default()
            },
            Interface {
                name: "eth0".into(),
                addresses: vec!["10.0.0.5".into()],
                ..Interface::default()
            },
        ];
        mark_management(&mut ifaces, "10.0.0.5".parse().unwrap());
        assert!(!ifaces[0].is_management && ifaces[1].is_management);
    }

    #[test]
    fn arch_mapping() {
        assert_eq!(map_arch("x86_64", true), "x86_64");
        assert_eq!(map_arch("aarch64", true), "arm64");
        assert_eq!(map_arch("arm", true), "armv7");
        assert_eq!(map_arch("x86", true), "i386");
        assert_eq!(map_arch("riscv64", true), "riscv64");
        assert_eq!(map_arch("powerpc64", true), "ppc64le");
        assert_eq!(map_arch("powerpc64", false), "powerpc64");
        assert_eq!(map_arch("s390x", false), "s390x");
        assert_eq!(map_arch("mips", false), "mips");
        assert!(!arch().is_empty());
    }

    #[test]
    fn route_toward_loopback_is_loopback() {
        assert_eq!(
            route_ip("127.0.0.1:9"),
            Some(IpAddr::from(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(route_ip("not a host"), None);
    }

    #[test]
    fn collect_never_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let sources = FactSources {
            hostname_file: Some(tmp.path().join("missing")),
            os_release_file: None,
            sys_class_net: PathBuf::from("/sys/class/net"),
        };
        let facts = collect(&sources, Some("127.0.0.1:9"));
        assert_eq!(facts.ip, "127.0.0.1");
        assert!(!facts.hostname.is_empty() && !facts.os_info.is_empty());
        if let Some(lo) = facts.interfaces.iter().find(|i| i.name == "lo") {
            assert!(lo.is_loopback && lo.is_management, "{lo:?}");
        }
        let none = collect(&sources, None);
        assert_eq!(none.ip, "");
        assert!(none.interfaces.iter().all(|i| !i.is_management));
    }
}
