#!/usr/bin/env bash
# flowgen against FlowJAX and zuko on the workloads of ../shared/peers/README.md.
#
#   benches/peers/run.sh [--quick] [--fresh-peers] [--no-fit]
#
# 1. Times flowgen (benches/peers/flowgen_side.rs, release build, the peers' protocol:
#    two warm-ups, median of 7 rounds) on log_prob, sample and train_step (one training
#    step: mean NLL, gradient, Adam lr 1e-3, batch 256) and writes target/peers/flowgen.json.
# 2. For each peer, if a Python venv with it installed is found — $FLOWGEN_PEERS_VENV, or
#    benches/peers/venv — runs its script (copies of the shared ones, in this directory)
#    into target/peers/<peer>.json when that file is missing or --fresh-peers is given;
#    otherwise uses the stored results in ../shared/peers/<peer>.json ($FLOWGEN_PEERS_STORED)
#    and says how to install the peer.
# 3. Prints one table (flowgen, FlowJAX, zuko, speed-ups) and the targets (table.py),
#    among them train_step 256 >= 2x FlowJAX on realnvp dim 2 and 16.
#
# --quick shortens flowgen's rounds tenfold (smoke test); --no-fit skips the peers'
# two_moons fits. Output directory: $FLOWGEN_PEERS_OUT (default target/peers).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${FLOWGEN_PEERS_OUT:-$root/target/peers}"
venv="${FLOWGEN_PEERS_VENV:-$here/venv}"
stored="${FLOWGEN_PEERS_STORED:-$root/../shared/peers}"
python="${PYTHON:-python3}"

quick=()
fresh=0
peer_args=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=(--quick) ;;
        --fresh-peers) fresh=1 ;;
        --no-fit) peer_args+=(--no-fit) ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"

echo "== flowgen (cargo bench --bench flowgen_side)" >&2
cargo bench --manifest-path "$root/Cargo.toml" --bench flowgen_side -- \
    --out "$out/flowgen.json" "${quick[@]}"

# peer name, Python modules it needs, install command
peer_json() {
    local peer="$1" modules="$2" install="$3"
    local py="$venv/bin/python"
    if [[ -x "$py" ]] && "$py" -c "import $modules" 2>/dev/null; then
        if [[ $fresh == 1 || ! -s "$out/$peer.json" ]]; then
            echo "== $peer (venv $venv)" >&2
            (cd "$here" && "$py" "bench_$peer.py" "$out/$peer.json.tmp" "${peer_args[@]}") &&
                mv "$out/$peer.json.tmp" "$out/$peer.json"
        else
            echo "== $peer: reusing $out/$peer.json (--fresh-peers to re-run)" >&2
        fi
        echo "$out/$peer.json"
    elif [[ -s "$stored/$peer.json" ]]; then
        {
            echo "== $peer: no venv with $modules at $venv; using the stored $stored/$peer.json."
            echo "   To measure it here: $python -m venv $venv && $venv/bin/pip install $install"
        } >&2
        echo "$stored/$peer.json"
    else
        echo "== $peer: neither a venv ($venv) nor stored results ($stored/$peer.json); skipped" >&2
    fi
}

peers=()
f="$(peer_json flowjax "jax, flowjax, equinox, optax" '"jax[cpu]" flowjax optax numpy')"
[[ -n "$f" ]] && peers+=("$f")
f="$(peer_json zuko "torch, zuko" "torch zuko numpy")"
[[ -n "$f" ]] && peers+=("$f")

echo >&2
"$python" "$here/table.py" "$out/flowgen.json" "${peers[@]}"
