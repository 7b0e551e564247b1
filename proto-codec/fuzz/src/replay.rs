//! The replay of a fuzz crate's committed inputs, shared by the product crates'
//! `tests/fuzz_seeds.rs` (included there with `#[path]`; plain std, no fuzzing dependency).

use std::path::Path;

/// A target's name and its check.
pub type Target<'a> = (&'a str, fn(&[u8]));

/// Replays every committed input of `fuzz` (a fuzz crate's directory) through its target's
/// check in `targets`; panics naming the inputs that fail and the targets without seeds.
pub fn replay_committed(fuzz: &Path, targets: &[Target<'_>]) {
    let mut failed = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dirs) = std::fs::read_dir(fuzz.join(kind)) else {
            continue;
        };
        for dir in dirs {
            let dir = dir.unwrap().path();
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let Some((_, check)) = targets.iter().find(|(t, _)| *t == name) else {
                panic!("{} names no fuzz target", dir.display());
            };
            for file in std::fs::read_dir(&dir).unwrap() {
                let file = file.unwrap().path();
                let data = std::fs::read(&file).unwrap();
                if std::panic::catch_unwind(|| check(&data)).is_err() {
                    failed.push(file.display().to_string());
                }
            }
        }
    }
    for (target, _) in targets {
        let seeds = fuzz.join("seeds").join(target);
        let count = std::fs::read_dir(&seeds).map_or(0, Iterator::count);
        assert!(count > 0, "{} has no seeds", seeds.display());
    }
    assert!(failed.is_empty(), "inputs failing their check: {failed:#?}");
}
