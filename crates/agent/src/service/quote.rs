//! Quoting for the formats the renderers write: POSIX sh words and XML text.
//! Each renderer's own rules (systemd words, Windows command lines) live with it.

/// A string as one POSIX sh word: bare when it holds only characters sh leaves
/// alone, else in single quotes (a `'` inside becomes `'\''`).
pub(crate) fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Text for a double-quoted XML attribute value (or element content).
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Text for XML element content: only `&` and `<` must be escaped (`>` too, for
/// the `]]>` sequence); quotes stay readable.
pub(crate) fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
