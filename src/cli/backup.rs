//! `kho backup` and `kho restore` (`crate::backup`; docs/OPERATIONS.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::backup::BackupError;

#[derive(Args)]
pub struct BackupArgs {
    /// The backup folder: created if missing; a backup of the same vault already there is extended
    /// with what is new. It holds the vault's secret key: keep it as safe as the server.
    destination: PathBuf,
    /// The server's configuration file (for its data folder). The server may keep running.
    #[arg(long, env = "KHO_CONFIG")]
    config: Option<PathBuf>,
    /// The data folder, instead of the configuration's.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup folder (with its kho-backup.json).
    backup: PathBuf,
    /// The configuration the restored vault will run with (its trust anchors, and its data folder
    /// unless --data-dir is given).
    #[arg(long, env = "KHO_CONFIG")]
    config: Option<PathBuf>,
    /// The folder to restore into, instead of the configuration's; it must not exist or be empty.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Skip the scrub after restoring (the log's consistency with the backup's checkpoint is still
    /// checked at open).
    #[arg(long)]
    no_scrub: bool,
}

fn bytes_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

pub fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let mut config = super::offline_config(args.config.as_deref())?;
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    let bar = bytes_bar();
    let report = crate::backup::backup(&config.data_dir, &args.destination, |copied, total| {
        bar.set_length(total);
        bar.set_position(copied);
    });
    bar.finish_and_clear();
    let report = report.with_context(|| format!("cannot back up the vault in {}", config.data_dir.display()))?;
    let manifest = &report.manifest;
    println!(
        "{} backup of {} log entries ({} journal batches, {} packs) into {}: {} bytes copied, {} in all; \
         consistent with the checkpoint of size {} (run {})",
        if report.incremental { "incremental" } else { "full" },
        manifest.snapshot.log_size,
        manifest.snapshot.batches,
        manifest.snapshot.packs.len(),
        args.destination.display(),
        report.bytes_copied,
        report.bytes_total,
        manifest.checkpoint.as_ref().map_or("none (no checkpoint signed yet)".to_owned(), |c| c.size.to_string()),
        manifest.runs,
    );
    Ok(ExitCode::SUCCESS)
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let mut config = super::offline_config(args.config.as_deref())?;
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    let bar = bytes_bar();
    let restored = crate::backup::restore(&args.backup, config.vault_config()?, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let (vault, report) = match restored {
        Ok(restored) => restored,
        Err(error @ (BackupError::Damaged(_) | BackupError::Restored(_) | BackupError::Open(_))) => {
            eprintln!("kho: {error}");
            return Ok(ExitCode::from(super::EXIT_INVALID));
        }
        Err(error) => return Err(error).context(format!("cannot restore {}", args.backup.display())),
    };
    println!(
        "restored {} bytes into {}: {} log entries, the catalog rebuilt from {} journal batches; the log \
         extends the backup's checkpoint{}",
        report.bytes_restored,
        config.data_dir.display(),
        vault.log_size(),
        report.batches_replayed,
        report.manifest.checkpoint.as_ref().map_or(String::new(), |c| format!(" (size {}, root {})", c.size, c.root)),
    );
    if args.no_scrub {
        return Ok(ExitCode::SUCCESS);
    }
    super::scrub_vault(&vault, None, false)
}
