//! `hermod-loadgen SCENARIO [options]`: runs a scenario, prints the final table on stdout, and
//! writes the JSON report with `--json` and the latency histogram with `--hdr-out`. Exit codes:
//! 0 for a completed run whatever it measured, 2 for bad options, 1 when the run could not be
//! carried out at all.

use std::fs;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hermod_loadgen::cli::Cli;
use hermod_loadgen::hdrtext;
use hermod_loadgen::scenarios::{self, BadOptions};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_cli(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<BadOptions>().is_some() => {
            eprintln!("hermod-loadgen: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("hermod-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen scenario and writes its report.
fn run_cli(cli: &Cli) -> anyhow::Result<()> {
    let Some(report) = scenarios::run(&cli.scenario)? else {
        return Ok(());
    };
    let common = cli.scenario.common();
    print!("{}", report.table());
    if let Some(path) = &common.json {
        let text = report.to_json().context("encoding the report")?;
        fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let (Some(path), Some(h)) = (&common.hdr_out, &report.latency_histogram) {
        fs::write(path, hdrtext::percentile_distribution(h))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
