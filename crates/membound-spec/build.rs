//! Embeds every `models/*.toml` of the workspace so the CLI and tests know the models without
//! a path at run time.
use std::{env, fs, path::PathBuf};

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../models");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    entries.retain(|p| {
        p.extension().is_some_and(|e| e == "toml") && p.file_stem().is_some_and(|s| s != "claims")
    });
    entries.sort();
    let mut out = String::from(
        "/// `(file name, contents)` of every embedded model spec.\npub static EMBEDDED: &[(&str, &str)] = &[\n",
    );
    for p in &entries {
        println!("cargo:rerun-if-changed={}", p.display());
        let name = p.file_name().unwrap().to_string_lossy();
        let abs = fs::canonicalize(p).unwrap();
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            abs.display().to_string()
        ));
    }
    out.push_str("];\n");
    fs::write(
        PathBuf::from(env::var("OUT_DIR").unwrap()).join("embedded_models.rs"),
        out,
    )
    .unwrap();
}
