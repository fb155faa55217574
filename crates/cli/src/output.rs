//! How commands print. Everything a command says on stdout goes through [`out!`]
//! or [`emit`] (JSON or text), so a failed write is an error the command returns,
//! never a panic, and a reader that closed the pipe early (`| head -1`) ends the
//! command quietly ([`Stop::ClosedOutput`]).
//!
//! Much of what is printed was sent by agents (names, facts). The hub refuses
//! control and invisible characters on entry, but a terminal must not depend on
//! that: [`write_line`] escapes every control character but newline and tab, and
//! every bidi or zero-width character, as `\uXXXX` (which is also how JSON spells
//! them, so `--json` output stays valid and means the same).

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

pub use crate::escape::escape;
use crate::failure::Stop;

/// `println!` for commands: `out!("…")?`. Returns `anyhow::Result<()>`.
macro_rules! out {
    () => {
        $crate::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// One line on stdout, escaped (see the module docs); what `out!` expands to.
pub fn write_line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let raw = args.to_string();
    let text = escape(&raw, false);
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Stop::ClosedOutput.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// A warning on stderr: `warning: …`. A closed stderr is ignored, as there is
/// nowhere else to say it.
pub fn warn(message: &str) {
    let _ = writeln!(std::io::stderr(), "warning: {}", escape(message, true));
}

/// The `--json` flag of every command that shows something.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct Format {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Print `value` as JSON when `--json` was given, else as the text `text` renders
/// (a table, or `Label: value` lines).
pub fn emit<T: Serialize + ?Sized>(
    format: Format,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if format.json {
        let json = serde_json::to_string_pretty(value).context("encoding JSON")?;
        out!("{json}")
    } else {
        let text = text(value);
        out!("{text}")
    }
}

/// A time from the hub (RFC 3339) the way every table and page prints it: UTC, to
/// the second, `2026-11-30 06:40:12Z`. Text that is not such a time is kept as is.
pub fn time(rfc3339: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    const SHOWN: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(SHOWN).ok())
        .unwrap_or_else(|| rfc3339.to_owned())
}

/// An optional time, or what its absence means (`never`, `-`).
pub fn time_or(rfc3339: Option<&str>, absent: &str) -> String {
    rfc3339.map_or_else(|| absent.to_owned(), time)
}

/// Parse `k=v` into a label.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("invalid label {s:?}: expected key=value")),
    }
}

/// Labels as `k=v,k=v`, sorted by key (the map is ordered).
pub fn labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    labels
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A left-aligned text table with a header row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(escape(cell, true).chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        let cells: Vec<std::borrow::Cow<'_, str>> = row.iter().map(|c| escape(c, true)).collect();
        out.push_str(&line(cells.iter().map(|c| c.as_ref()).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn what_agents_sent_cannot_drive_the_terminal() {
        assert_eq!(escape("web-01", false), "web-01");
        assert_eq!(escape("a\u{1b}]0;x\u{7}b", false), "a\\u001b]0;x\\u0007b");
        assert_eq!(escape("web\u{202e}10", false), "web\\u202e10");
        assert_eq!(escape("two\nlines", false), "two\nlines");
        assert_eq!(escape("two\nlines", true), "two\\u000alines");
        // JSON stays JSON, with the same meaning.
        let json = serde_json::to_string("x\u{202e}y").unwrap();
        let escaped = escape(&json, false);
        assert_eq!(
            serde_json::from_str::<String>(&escaped).unwrap(),
            "x\u{202e}y"
        );
    }

    #[test]
    fn times_print_in_utc_to_the_second() {
        assert_eq!(time("2026-11-30T06:40:12.345Z"), "2026-11-30 06:40:12Z");
        assert_eq!(time("2026-11-30T08:40:12+02:00"), "2026-11-30 06:40:12Z");
        assert_eq!(time("2026-11-30T06:40:12Z"), "2026-11-30 06:40:12Z");
        assert_eq!(time("soon"), "soon");
        assert_eq!(time_or(None, "never"), "never");
    }

    #[test]
    fn tables_align_on_the_widest_cell() {
        let t = table(
            &["A", "B"],
            &[
                vec!["long cell".into(), "x".into()],
                vec!["y".into(), String::new()],
            ],
        );
        assert_eq!(t, "A          B\nlong cell  x\ny");
    }
}
