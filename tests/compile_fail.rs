//! Every compile-time rule of `flow!` (DESIGN.md §4) has a case in `tests/ui/`, one rule
//! per file, whose `.stderr` snapshot shows the message under the offending token; the
//! flows that must be accepted are in `tests/ui/pass/` (they are built and run).
//!
//! Regenerate the snapshots with `TRYBUILD=overwrite cargo test --test compile_fail`.
//!
//! Note: the `generic-*` cases fail through `const` assertions evaluated when
//! `S::<N>::new` is monomorphized, which only `cargo build` does (not `cargo check`).
//! trybuild builds with `cargo build` because this test also has `pass` cases; keep both
//! in the same `TestCases`.

#[test]
fn compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
