//! The corpus kept in the repository as a regression test: every committed fuzz input
//! (`fuzz/seeds/<target>/`, and `fuzz/regressions/<target>/` for inputs that once failed) is
//! replayed through its target's check, the same function the fuzz target calls, on stable.

#[path = "../fuzz/src/lib.rs"]
mod checks;

#[path = "../fuzz/src/replay.rs"]
mod replay;

#[test]
fn committed_fuzz_inputs_pass_their_targets_checks() {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    replay::replay_committed(&fuzz, checks::TARGETS);
}
