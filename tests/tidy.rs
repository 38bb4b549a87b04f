//! Tidy checks over the source tree: every Rust file opens with a `//!` line saying what it is for,
//! and no crate reads the wall clock.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("target") {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    assert!(files.len() > 10, "found only {} Rust files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` opening line: {missing:?}"
    );
}

/// Leases expire by Redis's clock and timeouts run on the monotonic clock, so a host whose wall
/// clock is wrong or jumps decides nothing differently (reliability F16). A crate that reads the
/// wall clock would break that quietly.
#[test]
fn no_crate_reads_the_wall_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let readers: Vec<String> = files
        .iter()
        // The in-memory store plays Redis, whose clock (`TIME`) stamps the times shown.
        .filter(|file| !file.ends_with("events/src/memory_store/mod.rs"))
        .filter(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            [
                "SystemTime",
                "UNIX_EPOCH",
                "chrono::",
                "Utc::now",
                "Local::now",
            ]
            .iter()
            .any(|reader| text.contains(reader))
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        readers.is_empty(),
        "these files read the wall clock: {readers:?}"
    );
}
