//! `muster man [--out-dir DIR]`: manual pages generated from the command
//! definitions (clap_mangen): muster(1) on stdout, or, with `--out-dir`, that page
//! and one per subcommand (`muster-agent-install-service.1`, …) as files.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory as _};

use crate::output::out;

#[derive(Args)]
pub struct ManArgs {
    /// Write muster.1 and one page per subcommand into DIR (created if missing)
    /// instead of printing muster.1.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

pub fn exec(args: ManArgs) -> Result<()> {
    let cmd = crate::Cli::command();
    match args.out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("cannot render the manual page")?;
            super::completions::write_stdout(&page)
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("cannot write manual pages to {}", dir.display()))?;
            let pages = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".1"))
                })
                .count();
            out!("{pages} manual pages in {}", dir.display())
        }
    }
}
