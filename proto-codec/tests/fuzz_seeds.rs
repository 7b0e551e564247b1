//! The corpus kept in the repository as a regression test: every committed fuzz input
//! (`fuzz/seeds/<target>/`, and `fuzz/regressions/<target>/` for inputs that once failed) is
//! replayed through its target's check, the same function the fuzz target calls, on stable.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

#[test]
fn committed_fuzz_inputs_pass_their_targets_checks() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failed = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dirs) = std::fs::read_dir(fuzz.join(kind)) else {
            continue;
        };
        for dir in dirs {
            let dir = dir.unwrap().path();
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let Some((_, check)) = checks::TARGETS.iter().find(|(t, _)| *t == name) else {
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
    for (target, _) in checks::TARGETS {
        let seeds = fuzz.join("seeds").join(target);
        let count = std::fs::read_dir(&seeds).map_or(0, Iterator::count);
        assert!(count > 0, "{} has no seeds", seeds.display());
    }
    assert!(failed.is_empty(), "inputs failing their check: {failed:#?}");
}
