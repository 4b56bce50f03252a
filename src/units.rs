//! Parsing and printing sizes for the CLI.

use std::borrow::Cow;

use membound_spec::model::MAX_CONTEXT;

/// Parses a context length: `4096`, `64k` (×1024), `1m` (×1024²), from 1 token to
/// [`MAX_CONTEXT`].
pub fn parse_ctx(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = match t.strip_suffix('k') {
        Some(n) => (n, 1024),
        None => match t.strip_suffix('m') {
            Some(n) => (n, 1024 * 1024),
            None => (t.as_str(), 1),
        },
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a context length (e.g. 4096, 64k, 1m)"))?;
    match n.checked_mul(mul) {
        Some(0) => Err(format!("context `{s}` must be at least 1 token")),
        Some(v) if v <= MAX_CONTEXT => Ok(v),
        _ => Err(format!(
            "context `{s}` is too large (at most {MAX_CONTEXT} tokens, 16m)"
        )),
    }
}

/// Bytes as GiB with two decimals.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Bytes in the most readable binary unit.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A count in billions or millions.
pub fn count(n: u64) -> String {
    let v = n as f64;
    if v >= 1e9 {
        format!("{:.2} B", v / 1e9)
    } else {
        format!("{:.1} M", v / 1e6)
    }
}

/// `s` safe for a terminal: control characters (escape sequences, newlines, carriage returns)
/// and bidirectional-text overrides are written as `\u{..}` escapes, so text read from files
/// cannot move the cursor, forge lines or reorder what is printed.
pub fn clean(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if unsafe_char(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Renders rows as a left-aligned text table with a header rule; every cell is [`clean`]ed.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c).into_owned()).collect())
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    out.push_str(
        &width
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    for r in &rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts() {
        assert_eq!(parse_ctx("4096"), Ok(4096));
        assert_eq!(parse_ctx("112k"), Ok(114_688));
        assert_eq!(parse_ctx("1M"), Ok(1 << 20));
        assert!(parse_ctx("0").is_err());
        assert!(parse_ctx("lots").is_err());
        assert!(parse_ctx("99999999999999999999k").is_err());
        assert_eq!(parse_ctx("16m"), Ok(MAX_CONTEXT));
        for big in ["16385k", "18014398509481984k", "17m"] {
            assert!(parse_ctx(big).unwrap_err().contains("too large"), "{big}");
        }
    }

    #[test]
    fn terminal_text_is_cleaned() {
        assert_eq!(clean("blk.0.attn_q.weight"), "blk.0.attn_q.weight");
        assert_eq!(
            clean("a\x1b[2Jb\nc\u{202e}"),
            "a\\u{1b}[2Jb\\u{a}c\\u{202e}"
        );
        let t = table(&["name"], &[vec!["x\nforged  row".into()]]);
        assert_eq!(t.lines().count(), 3, "{t}");
    }

    #[test]
    fn formatting() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 29), "1.50 GiB");
        assert_eq!(count(5_130_000_000), "5.13 B");
        let t = table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    bb\n---  --\nxyz  1");
    }
}
