//! `membound`: the command line of the membound benchmarks — model specs, the memory-fit
//! planner, GGUF inspection and machine facts. Benchmarks themselves run with `cargo bench`.

/// `println!` that returns a [`StdoutError`] from the enclosing function instead of panicking
/// when stdout is closed or full.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::StdoutError)?
    }};
}

mod claims_decode;
mod cmd_claims;
mod cmd_compare;
mod cmd_devices;
mod cmd_fit;
mod cmd_inspect;
mod cmd_report;
mod cmd_results;
mod cmd_spec;
mod cmd_synth;
mod units;

use std::io::Write as _;
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
    /// Keeps a run: `results add NAME [DIR]` copies Criterion's output and machine.json into
    /// `results/NAME/` with its provenance.
    Results(cmd_results::Args),
    /// The seed report's claims (`models/claims.toml`) with a verdict per results folder:
    /// confirmed, refuted, predicted or not measured here.
    Claims(cmd_claims::Args),
    /// A Markdown report with SVG figures of results folders (bandwidth, GEMV, MoE, attention,
    /// decode) and the claims table.
    Report(cmd_report::Args),
    /// Writes a GGUF file of a model's real shapes with generated weights in a recipe's types
    /// (for `MEMBOUND_GGUF` and for llama.cpp's `llama-bench` on the same bytes).
    Synth(cmd_synth::Args),
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

/// Writing to stdout failed (closed pipe, full disk).
#[derive(Debug)]
pub struct StdoutError(pub std::io::Error);

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write to stdout: {}", self.0)
    }
}

impl std::error::Error for StdoutError {}

/// Prints `message` on stderr as one line, ignoring a closed stderr.
pub fn warn(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", units::clean(message));
}

/// An error and its causes as one line, each cause once: a cause whose text the line already
/// holds (a `source` that its parent's message repeats) is left out.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

/// Parses the command line. Help and version go to stdout as clap writes them (a closed stdout
/// is ignored); a usage error is its first paragraph on one line, exit 2.
fn parse() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    Cli::try_parse().map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
        }
        _ => {
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .flat_map(str::split_whitespace)
                .collect();
            warn(&first.join(" "));
            ExitCode::from(2)
        }
    })
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let result = match cli.command {
        Command::Spec(a) => cmd_spec::run(&a),
        Command::Fit(a) => cmd_fit::run(&a),
        Command::Inspect(a) => cmd_inspect::run(&a),
        Command::Compare(a) => cmd_compare::run(&a),
        Command::Results(a) => cmd_results::run(&a),
        Command::Claims(a) => cmd_claims::run(&a),
        Command::Report(a) => cmd_report::run(&a),
        Command::Synth(a) => cmd_synth::run(&a),
        Command::Models { json } => cmd_spec::models(json),
        Command::Hardware { json } => cmd_fit::hardware(json),
        Command::Devices { json } => cmd_devices::run(json),
    }
    .and_then(|()| std::io::stdout().flush().map_err(|e| StdoutError(e).into()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`membound models | head -1`): nothing more to say.
        Err(e)
            if e.downcast_ref::<StdoutError>()
                .is_some_and(|s| s.0.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            warn(&format!("error: {}", one_line(&e)));
            ExitCode::from(2)
        }
    }
}
