//! `hermod-loadgen SCENARIO [options]`: runs a scenario, prints the final table on stdout, and
//! writes the JSON report with `--json`. Exit codes: 0 for a completed run whatever it measured,
//! 2 for bad options (clap), 1 when the run could not be carried out at all.

use std::fs;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hermod_loadgen::cli::{Cli, Scenario};
use hermod_loadgen::run;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_cli(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hermod-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen scenario and writes its report.
fn run_cli(cli: &Cli) -> anyhow::Result<()> {
    let (report, json) = match &cli.scenario {
        Scenario::Echo(args) => (run::run_echo(args)?, &args.common.json),
        Scenario::Connect(args) => (run::run_connect(args)?, &args.common.json),
    };
    print!("{}", report.table());
    if let Some(path) = json {
        let text = report.to_json().context("encoding the report")?;
        fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
