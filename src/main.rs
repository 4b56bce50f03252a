//! `membound`: the command line of the membound benchmarks — model specs, the memory-fit
//! planner, GGUF inspection and machine facts. Benchmarks themselves run with `cargo bench`.

mod cmd_compare;
mod cmd_devices;
mod cmd_fit;
mod cmd_inspect;
mod cmd_spec;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// How fast can this machine decode tokens of this model, and why?
#[derive(Parser)]
#[command(name = "membound", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A model's architecture, parameters and bytes read per token (total and active).
    Spec(cmd_spec::Args),
    /// Does a model fit on these devices at this context, where do its layers go, and what is
    /// its best-case decode rate?
    Fit(cmd_fit::Args),
    /// A GGUF file's tensors, bytes by class and type, implied spec and bytes read per token.
    Inspect(cmd_inspect::Args),
    /// Criterion baselines of several machines side by side: time, GB/s, fraction of each
    /// machine's measured read bandwidth, ratio to the first.
    Compare(cmd_compare::Args),
    /// The models membound knows (`models/*.toml`).
    Models {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The backends this machine has: its CPU and each CUDA device (or why there is none).
    Devices {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The hardware table (spec-sheet bandwidth, memory, L2) and this machine's CPU.
    Hardware {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Spec(a) => cmd_spec::run(&a),
        Command::Fit(a) => cmd_fit::run(&a),
        Command::Inspect(a) => cmd_inspect::run(&a),
        Command::Compare(a) => cmd_compare::run(&a),
        Command::Models { json } => cmd_spec::models(json),
        Command::Hardware { json } => cmd_fit::hardware(json),
        Command::Devices { json } => cmd_devices::run(json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
