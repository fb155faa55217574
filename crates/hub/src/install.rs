//! The bootstrap scripts (`GET /bootstrap`) and the one-liners that run them
//! (SPEC §10), rendered from values the hub controls: its advertised URL and its
//! CA. Pure text; every value is quoted for the shell it lands in even though the
//! hub validated it, so no value can become code.
//!
//! The invariant: nothing fetched without verification is ever run. The sh line
//! carries the CA certificate itself and fetches the script with it; the
//! PowerShell line checks the server's chain root against the CA's SHA-256. With a
//! publicly trusted certificate (`--tls-cert`) the system's trust store verifies.

const SH_TEMPLATE: &str = include_str!("install/install.sh");
const PS_TEMPLATE: &str = include_str!("install/install.ps1");

/// What the scripts need to know about the hub.
pub struct HubIdentity<'a> {
    /// The advertised URL, `https://host[:port]`.
    pub url: &'a str,
    /// The CA certificate (PEM) clients must verify the hub with; `None` when the
    /// hub's certificate is publicly trusted.
    pub ca_pem: Option<&'a str>,
    /// Lowercase hex SHA-256 of the CA certificate (DER); `None` as above.
    pub ca_sha256_hex: Option<&'a str>,
}

/// `text` as one single-quoted sh word.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `text` as one single-quoted PowerShell string.
pub fn ps_quote(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            // PowerShell treats the typographic quotes as quotes too.
            '\'' | '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}' => vec![c, c],
            c => vec![c],
        })
        .collect();
    format!("'{escaped}'")
}

/// The certificate's base64 lines (no armour), at most 64 characters each.
fn pem_lines(pem: &str) -> Vec<String> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    body.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// The Linux/macOS/BSD line: write the CA to a temp file, fetch the script whole
/// over a connection verified with it, and only then run it as root with the
/// token (a failed or cut-off fetch runs nothing and fails the line). Users may
/// append `--name N`, `--label k=v` and `--force`.
pub fn sh_command(hub: &HubIdentity<'_>, token: &str) -> String {
    let script = sh_quote(&format!("{}/bootstrap", hub.url));
    let token = sh_quote(token);
    match hub.ca_pem {
        Some(pem) => {
            let mut words = vec![sh_quote("-----BEGIN CERTIFICATE-----")];
            words.extend(pem_lines(pem).iter().map(|l| sh_quote(l)));
            words.push(sh_quote("-----END CERTIFICATE-----"));
            format!(
                "f=$(mktemp) && printf '%s\\n' {} >\"$f\" && curl -fsS --proto '=https' --cacert \"$f\" -o \"$f.sh\" {script} && sudo sh \"$f.sh\" --token {token}",
                words.join(" "),
            )
        }
        None => format!(
            "f=$(mktemp) && curl -fsS --proto '=https' -o \"$f\" {script} && sudo sh \"$f\" --token {token}"
        ),
    }
}

/// The Windows line, for a PowerShell run as Administrator: trust exactly the
/// hub's CA (by SHA-256 of the chain's root), fetch the script, run it with the
/// token. Users may append `-Name N`, `-Label k=v` and `-Force`.
pub fn powershell_command(hub: &HubIdentity<'_>, token: &str) -> String {
    let check = match hub.ca_sha256_hex {
        Some(hex) => format!(
            "$h={}; [Net.ServicePointManager]::ServerCertificateValidationCallback={{param($s,$c,$ch,$e) $r=$ch.ChainElements[$ch.ChainElements.Count-1].Certificate; (([BitConverter]::ToString([Security.Cryptography.SHA256]::Create().ComputeHash($r.RawData))) -replace '-','').ToLower() -eq $h}}; ",
            ps_quote(hex)
        ),
        None => String::new(),
    };
    format!(
        "[Net.ServicePointManager]::SecurityProtocol=[Net.SecurityProtocolType]::Tls12; {check}& ([scriptblock]::Create((New-Object Net.WebClient).DownloadString({}))) -Token {}",
        ps_quote(&format!("{}/bootstrap?os=windows", hub.url)),
        ps_quote(token)
    )
}

/// The plain enroll line, for a machine that already has the binary.
pub fn enroll_command(hub_url: &str, token: &str) -> String {
    // Both are ours and shell-safe (a checked URL, base64url and a dot), and the
    // line has always been printed bare.
    format!("muster enroll --hub {hub_url} --token {token}")
}

/// The POSIX sh installer with the hub's URL and CA written in.
pub fn sh_script(hub: &HubIdentity<'_>) -> String {
    let pem = hub.ca_pem.map(str::trim).unwrap_or_default();
    SH_TEMPLATE
        .replacen("'@HUB_URL@'", &sh_quote(hub.url), 1)
        .replacen("'@CA_PEM@'", &sh_quote(pem), 1)
}

/// The PowerShell installer with the hub's URL and CA hash written in.
pub fn powershell_script(hub: &HubIdentity<'_>) -> String {
    PS_TEMPLATE
        .replacen("'@HUB_URL@'", &ps_quote(hub.url), 1)
        .replacen(
            "'@CA_HASH_HEX@'",
            &ps_quote(hub.ca_sha256_hex.unwrap_or_default()),
            1,
        )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBAAAA\nBBBB\n-----END CERTIFICATE-----\n";

    fn hub() -> HubIdentity<'static> {
        HubIdentity {
            url: "https://hub.example:8443",
            ca_pem: Some(PEM),
            ca_sha256_hex: Some("ab12"),
        }
    }

    #[test]
    fn quoting_leaves_no_way_out_of_the_string() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert_eq!(ps_quote("a'b\u{2019}c"), "'a''b\u{2019}\u{2019}c'");
    }

    #[test]
    fn the_lines_are_one_line_and_end_with_the_token() {
        let h = hub();
        for line in [
            sh_command(&h, "met_x.y"),
            powershell_command(&h, "met_x.y"),
            enroll_command(h.url, "met_x.y"),
        ] {
            assert!(!line.contains('\n'), "{line}");
            assert!(
                line.ends_with("met_x.y'") || line.ends_with(" met_x.y"),
                "{line}"
            );
        }
        let sh = sh_command(&h, "met_x.y");
        assert!(sh.contains("'MIIBAAAABBBB'") && sh.contains("--cacert \"$f\""));
        assert!(!sh.contains('|'), "nothing is piped into a shell: {sh}");
        assert!(!sh.contains(" -k") && !sh.contains("--insecure"));
        let public = HubIdentity {
            ca_pem: None,
            ca_sha256_hex: None,
            ..hub()
        };
        assert!(!sh_command(&public, "t").contains("cacert"));
        assert!(!powershell_command(&public, "t").contains("Callback"));
    }

    #[test]
    fn the_scripts_carry_the_hub_and_nothing_is_left_unfilled() {
        let sh = sh_script(&hub());
        assert!(sh.contains("HUB_URL='https://hub.example:8443'"));
        assert!(sh.contains("CA_PEM='-----BEGIN CERTIFICATE-----\nMIIBAAAA"));
        assert!(sh.trim_end().ends_with("main \"$@\""));
        let ps = powershell_script(&hub());
        assert!(ps.contains("$CaHash = 'ab12'"));
        for s in [&sh, &ps] {
            assert!(!s.contains("@HUB_URL@") && !s.contains("@CA_"), "{s}");
        }
    }
}
