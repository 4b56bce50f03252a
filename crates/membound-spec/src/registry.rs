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
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or missing fields.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// The spec parsed but does not hold together.
    #[error("{file}: {source}")]
    Invalid { file: String, source: SpecError },
}

/// Parses and validates one spec; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<ModelSpec, RegistryError> {
    let spec: ModelSpec = toml::from_str(text).map_err(|e| RegistryError::Parse {
        file: file.to_string(),
        message: e.to_string().trim_end().to_string(),
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

/// One spec from a file.
pub fn from_file(path: &Path) -> Result<ModelSpec, RegistryError> {
    let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
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
