#!/usr/bin/env bash
# Compile time of flow! declarations, as a user sees it: the incremental `cargo build
# --release` of a crate that depends on flowgen, after the dependencies are built.
#
#   bash benches/compile_time.sh [--reps N] [--keep]
#
# Creates a throw-away crate in a temporary directory under target/ with three binaries:
#
# * baseline — no flow: uses flowgen's re-exported ndarray only (the fixed cost of
#   compiling and linking a binary against flowgen);
# * flow4    — 4 layers:  repeat(2)  { coupling(mask = even, hidden = [64, 64]); permute(reverse) }
# * flow32   — 32 layers: repeat(16) { coupling(mask = even, hidden = [64, 64]); permute(reverse) }
#
# each of which uses its flow the way a user does (sample, log_prob, the point API, one
# training step: nll_and_grad and Adam), so the generated code is monomorphised and
# compiled. The crate builds into target/compile-bench (CARGO_TARGET_DIR), so flowgen's
# dependencies are compiled once and reused by later runs; the crate copies the
# workspace's Cargo.lock, so the versions are the workspace's.
#
# Then, N times (3) per binary: touch its source and time `cargo build --release --bin B`
# (the target: < 10 s for flow32), and `cargo check --bin B` (macro expansion, type and
# borrow checking without code generation: an upper bound on the macro's own expansion
# time, which stable Rust cannot time by itself). Prints the medians and each run.
#
# --keep keeps the temporary crate (its path is printed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
reps=3
keep=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --reps) reps="$2"; shift ;;
        --keep) keep=1 ;;
        -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "compile_time.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

export CARGO_TARGET_DIR="$root/target/compile-bench"
mkdir -p "$root/target" "$CARGO_TARGET_DIR"
crate="$(mktemp -d "$root/target/compile-time.XXXXXX")"
if [[ $keep == 0 ]]; then
    trap 'rm -rf "$crate"' EXIT
fi

# ---- the crate ------------------------------------------------------------------------
mkdir -p "$crate/src/bin"
cat >"$crate/Cargo.toml" <<EOF
[package]
name = "flowgen-compile-time"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
flowgen = { path = "$root" }

# Not a member of the flowgen workspace it sits under.
[workspace]

# `cargo check` without the incremental cache, so that every check redoes the expansion
# and the type checking (release builds are not incremental anyway).
[profile.dev]
incremental = false
EOF
cp "$root/Cargo.lock" "$crate/Cargo.lock"

cat >"$crate/src/bin/baseline.rs" <<'EOF'
fn main() {
    let x = flowgen::ndarray::Array2::<f32>::from_elem((4, 2), 0.5);
    println!("{}", x.sum());
}
EOF

# flow_bin NAME REPEATS: a binary whose flow has 2 × REPEATS layers.
flow_bin() {
    local name="$1" repeats="$2"
    cat >"$crate/src/bin/$name.rs" <<EOF
use flowgen::prelude::*;
use flowgen::train::{Adam, Optimizer};

flow! {
    pub struct Deep {
        dim = 8; base = normal;
        repeat($repeats) { coupling(mask = even, hidden = [64, 64]); permute(reverse) }
    }
}

fn main() {
    let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(0);
    let mut model = Deep::new(&mut rng);
    let x = model.sample(256, &mut rng);
    let log_p = model.log_prob(x.view()).expect("samples are in the support");
    let point = model.log_prob_point([0.5; 8]).expect("a finite point");
    let mut grad = vec![0.0f32; model.param_len()];
    let mut opt = Adam::new(model.param_len());
    let nll = model.nll_and_grad(x.view(), &mut grad).expect("a valid batch");
    opt.step(&mut model, &grad, 1e-3);
    println!("{} {point} {nll}", log_p.sum());
}
EOF
}
flow_bin flow4 2
flow_bin flow32 16

cd "$crate"
echo "== crate $crate, target dir $CARGO_TARGET_DIR" >&2
echo "== building the dependencies (once; reused by later runs)" >&2
t0=$(date +%s.%N)
cargo build --release --bins
cargo check --bins
t1=$(date +%s.%N)
echo "== first build (dependencies included): $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f s", b - a }')" >&2

for bin in baseline flow4 flow32; do
    "$CARGO_TARGET_DIR/release/$bin" >/dev/null
done

# timed CMD...: the wall seconds of CMD (its output hidden unless it fails).
timed() {
    local t0 t1 log
    log="$(mktemp)"
    t0=$(date +%s.%N)
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    t1=$(date +%s.%N)
    rm -f "$log"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A build check
for ((r = 1; r <= reps; r++)); do
    for bin in baseline flow4 flow32; do
        touch "src/bin/$bin.rs"
        build[$bin]+="$(timed cargo build --release --bin "$bin") "
        touch "src/bin/$bin.rs"
        check[$bin]+="$(timed cargo check --bin "$bin") "
    done
    echo "== round $r/$reps done" >&2
done

echo
echo "Incremental rebuild after touching the source (wall seconds, median of $reps; runs in brackets)"
printf '%-10s %-7s %24s %24s\n' binary layers "cargo build --release" "cargo check"
for bin in baseline flow4 flow32; do
    case "$bin" in baseline) layers=0 ;; flow4) layers=4 ;; flow32) layers=32 ;; esac
    # shellcheck disable=SC2086
    b=$(median ${build[$bin]})
    # shellcheck disable=SC2086
    c=$(median ${check[$bin]})
    printf '%-10s %-7s %8s s [%13s] %8s s [%13s]\n' "$bin" "$layers" "$b" "${build[$bin]% }" "$c" "${check[$bin]% }"
done
# shellcheck disable=SC2086
b32=$(median ${build[flow32]})
# shellcheck disable=SC2086
b0=$(median ${build[baseline]})
# shellcheck disable=SC2086
c32=$(median ${check[flow32]})
# shellcheck disable=SC2086
c0=$(median ${check[baseline]})
echo
awk -v b="$b32" -v b0="$b0" -v c="$c32" -v c0="$c0" 'BEGIN {
    printf "flow32 above baseline: build %.2f s, check (expansion + type checking) %.2f s\n", b - b0, c - c0
    printf "target: flow32 incremental release build < 10 s: %s (%.2f s)\n", (b < 10 ? "MET" : "MISSED"), b
}'
