//! `membound synth MODEL --quant Q -o FILE.gguf`: writes a model file of a spec's real shapes,
//! its tensors stored as the recipe stores them and filled with generated values — the file
//! the decode suite reads with `MEMBOUND_GGUF`, and one llama.cpp loads (no vocabulary:
//! `tokenizer.ggml.model = "none"`), so `llama-bench` and membound can time the same bytes.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use membound_gguf::synthetic::{Fill, model_writer, tiny};
use membound_spec::Recipe;
use membound_spec::registry::find;

use crate::units::gib;

/// Arguments of `membound synth`.
#[derive(clap::Args)]
pub struct Args {
    /// Model name (see `membound models`) or path to a spec `.toml`.
    pub model: String,
    /// Quantization recipe: F16, BF16, Q8_0, Q4_0, Q4_K_M, Q4_K_S, Q5_K_M, Q6_K, MXFP4_MOE.
    #[arg(long, default_value = "Q4_K_M")]
    pub quant: String,
    /// The file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Tensor contents: `random` (normal values, quantized; a tile of rows repeated per
    /// tensor), `distinct` (every row its own values: slow, for small models whose outputs are
    /// compared value by value) or `zeros` (fastest).
    #[arg(long, default_value = "random")]
    pub fill: String,
    /// Seed of the random values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A small model of the same structure with this hidden size (a multiple of 256 keeps
    /// K-quants on every matrix) instead of the real shapes.
    #[arg(long)]
    pub tiny: Option<u64>,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Writes the file, printing progress on stderr.
pub fn run(a: &Args) -> Result<()> {
    let mut m = find(&a.model)?;
    if let Some(hidden) = a.tiny {
        if hidden == 0 || hidden % 32 != 0 {
            bail!("--tiny {hidden}: the hidden size must be a positive multiple of 32");
        }
        m = tiny(&m, hidden);
    }
    let recipe: Recipe = a.quant.parse()?;
    let fill = match a.fill.as_str() {
        "random" => Fill::Random { seed: a.seed },
        "distinct" => Fill::Distinct { seed: a.seed },
        "zeros" => Fill::Zeros,
        other => bail!("--fill {other}: use random, distinct or zeros"),
    };
    if a.output.exists() && !a.force {
        bail!(
            "{} exists (--force replaces it)",
            a.output.to_string_lossy()
        );
    }
    let w = model_writer(&m, recipe, fill)
        .with_context(|| format!("{} cannot be written as GGUF", m.name))?;
    let total = w.file_size();
    crate::warn(&format!(
        "writing {} ({recipe}, {}) to {}",
        m.name,
        gib(total),
        a.output.to_string_lossy()
    ));
    let create = || {
        std::fs::File::create(&a.output)
            .with_context(|| format!("cannot create {}", a.output.to_string_lossy()))
    };
    let mut out = std::io::BufWriter::new(create()?);
    let mut shown = 0u64;
    let mut progress = |done: u64, total: u64| {
        let pct = done * 100 / total.max(1);
        if pct >= shown + 10 || done == total {
            shown = pct;
            crate::warn(&format!("  {pct:>3} % ({})", gib(done)));
        }
    };
    let written = w
        .write_with_progress(&mut out, &mut progress)
        .and_then(|n| Ok(out.flush().map(|()| n)?));
    match written {
        Ok(n) => {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}\t{n} bytes", a.output.to_string_lossy())
                .map_err(crate::StdoutError)?;
            Ok(())
        }
        Err(e) => {
            // A partial file would read as a corrupt model later.
            let _ = std::fs::remove_file(&a.output);
            Err(e).with_context(|| format!("writing {}", a.output.to_string_lossy()))
        }
    }
}
