//! Finding model specs: the `models/*.toml` embedded at build time, a directory of them, or
//! one file by path. Every failure names the file (and for TOML errors, the line).

use std::path::{Path, PathBuf};

use crate::model::{ModelSpec, SpecError};

include!(concat!(env!("OUT_DIR"), "/embedded_models.rs"));

/// Why a spec could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No spec by that name.
    #[error("unknown model `{name}` (known: {known})")]
    Unknown { name: String, known: String },
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file of at most [`MAX_SPEC_BYTES`] of UTF-8 text.
    #[error("{path}: {problem}")]
    NotASpec { path: PathBuf, problem: String },
    /// The TOML is malformed or has unknown or missing fields.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// The spec parsed but does not hold together.
    #[error("{file}: {source}")]
    Invalid { file: String, source: SpecError },
}

/// The largest spec file read (real ones are a few KiB).
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// A TOML error on one line: `line L, column C: message`.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Parses and validates one spec; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<ModelSpec, RegistryError> {
    let spec: ModelSpec = toml::from_str(text).map_err(|e| RegistryError::Parse {
        file: file.to_string(),
        message: one_line(text, &e),
    })?;
    spec.validate().map_err(|source| RegistryError::Invalid {
        file: file.to_string(),
        source,
    })?;
    Ok(spec)
}

/// Every embedded spec, in file-name order.
pub fn embedded() -> Result<Vec<ModelSpec>, RegistryError> {
    EMBEDDED
        .iter()
        .map(|(file, text)| parse(&format!("models/{file}"), text))
        .collect()
}

/// Every spec in `dir/*.toml`.
pub fn from_dir(dir: &Path) -> Result<Vec<ModelSpec>, RegistryError> {
    let io = |source| RegistryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_stem().is_some_and(|s| s != "claims")
        })
        .collect();
    paths.sort();
    paths.iter().map(|p| from_file(p)).collect()
}

/// One spec from a file: a regular file (never a FIFO or device, which could block or never
/// end) of at most [`MAX_SPEC_BYTES`] of UTF-8, its size checked before anything is read.
pub fn from_file(path: &Path) -> Result<ModelSpec, RegistryError> {
    use std::io::Read as _;
    let io = |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let not_a_spec = |problem: String| RegistryError::NotASpec {
        path: path.to_path_buf(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_a_spec("not a regular file".into()));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.starts_with(b"GGUF") {
        return Err(not_a_spec(
            "is a GGUF file, not a spec (use `membound inspect` on it)".into(),
        ));
    }
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(not_a_spec(format!(
            "is larger than {MAX_SPEC_BYTES} bytes, too large for a spec"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        not_a_spec(format!(
            "is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(&path.display().to_string(), &text)
}

/// Finds a model: a path to a `.toml` file, else a name (or display name, case-insensitive)
/// among the embedded specs.
pub fn find(name_or_path: &str) -> Result<ModelSpec, RegistryError> {
    let path = Path::new(name_or_path);
    if name_or_path.ends_with(".toml") || path.is_file() {
        return from_file(path);
    }
    let all = embedded()?;
    let want = name_or_path.trim().to_ascii_lowercase();
    all.iter()
        .find(|m| m.name == want || m.display_name.to_ascii_lowercase() == want)
        .cloned()
        .ok_or_else(|| RegistryError::Unknown {
            name: name_or_path.to_string(),
            known: all
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}
