//! How commands print. Everything a command says on stdout goes through [`out!`]
//! or [`emit`] (JSON or text), so a failed write is an error the command returns,
//! never a panic, and a reader that closed the pipe early (`| head -1`) ends the
//! command quietly ([`Stop::ClosedOutput`]).

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

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

/// One line on stdout; what `out!` expands to.
pub fn write_line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_fmt(args)
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
    let _ = writeln!(std::io::stderr(), "warning: {message}");
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
                *w = (*w).max(cell.chars().count());
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
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
