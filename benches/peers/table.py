"""Merges flowgen's JSON with the peers' (same schema) into one table, then checks the
performance targets. Standard library only.

    python3 table.py FLOWGEN.json PEER.json [PEER.json ...]

Speed-up = peer seconds / flowgen seconds (above 1: flowgen is faster). Rows of flowgen's
extra measurements (the point API, the unfused reference path, realnvp in FlowJAX's
architecture) are compared with the peer row they stand in for. train_step is one training
step (mean NLL, gradient, Adam lr 1e-3) on 256 rows.
"""
import json
import sys

PEERS = ("flowjax", "zuko")
ORDER = [("realnvp", 2), ("realnvp", 16), ("elementwise16", 64), ("nsf", 16), ("maf", 16)]
OPS = [("log_prob", 1), ("log_prob_point", 1), ("log_prob", 256), ("log_prob", 65536),
       ("sample", 65536), ("train_step", 256), ("log_prob_reference", 65536)]


def load(paths):
    rows, sources = {}, {}
    for path in paths:
        d = json.load(open(path))
        for r in d["results"]:
            if "seconds" not in r or r["op"] == "two_moons_fit":
                continue
            rows[(r["peer"], r["model"], r["dim"], r["op"], r["batch"])] = r["seconds"]
            sources[r["peer"]] = path
    return rows, sources


def fmt_time(s):
    if s is None:
        return "–"
    if s < 1e-3:
        return "%.3g µs" % (s * 1e6)
    if s < 1.0:
        return "%.3g ms" % (s * 1e3)
    return "%.3g s" % s


def fmt_ratio(peer, ours):
    if peer is None or ours is None:
        return "–"
    return "%.2f×" % (peer / ours)


def main(paths):
    rows, sources = load(paths)
    get = rows.get

    def peer_key(model, dim, op, batch):
        # What a flowgen-only row is compared with.
        if op == "log_prob_point":
            op = "log_prob"
        if model == "realnvp_fj":
            model = "realnvp"
        return model, dim, op, batch

    header = ["workload", "op", "batch", "flowgen"] + list(PEERS) + ["vs " + p for p in PEERS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    keys = []
    for model, dim in ORDER:
        for op, batch in OPS:
            keys.append((model, dim, op, batch))
        if model == "realnvp":
            for op, batch in OPS:
                if op != "log_prob_reference":
                    keys.append(("realnvp_fj", dim, op, batch))
    keys.sort(key=lambda k: (ORDER.index(("realnvp" if k[0] == "realnvp_fj" else k[0], k[1])),
                             k[0] == "realnvp_fj"))
    for model, dim, op, batch in keys:
        ours = get(("flowgen", model, dim, op, batch))
        pk = peer_key(model, dim, op, batch)
        theirs = {p: get((p,) + pk) for p in PEERS}
        if model == "realnvp_fj":  # FlowJAX's architecture: compared with FlowJAX only
            theirs = {p: (t if p == "flowjax" else None) for p, t in theirs.items()}
        if op == "log_prob_reference":  # unfused path: compared with the fused one
            theirs = {p: None for p in PEERS}
        if ours is None and all(t is None for t in theirs.values()):
            continue
        name = {"realnvp_fj": "realnvp (FlowJAX arch.)"}.get(model, model) + " %d" % dim
        label = {"log_prob_point": "log_prob (point API)",
                 "log_prob_reference": "log_prob (unfused reference)"}.get(op, op)
        cells = [name, label, str(batch), fmt_time(ours)]
        cells += [fmt_time(theirs[p]) for p in PEERS]
        cells += [fmt_ratio(theirs[p], ours) for p in PEERS]
        print("| " + " | ".join(cells) + " |")
    print()
    print("speed-up = peer time / flowgen time (> 1: flowgen faster). flowgen: %s; peers: %s"
          % (sources.get("flowgen", "?"),
             ", ".join("%s from %s" % (p, sources.get(p, "(missing)")) for p in PEERS)))
    print()
    targets(get)


def targets(get):
    """The targets of the performance issue; each line says MET or MISSED."""
    lines = []

    def check(name, ok, detail):
        if ok is None:
            lines.append("  [ n/a  ] %s: %s" % (name, detail))
        else:
            lines.append("  [%s] %s: %s" % ("  MET " if ok else "MISSED", name, detail))

    def fg(model, dim, op, batch):
        return get(("flowgen", model, dim, op, batch))

    def peer(p, model, dim, op, batch):
        return get((p, model, dim, op, batch))

    for model, dim in ORDER:
        w = "%s %d" % (model, dim)
        if model in ("nsf", "maf"):
            # The layer-library workloads: >= 2x zuko (FlowJAX is not run on them).
            for op, batch in (("log_prob", 65536), ("sample", 65536), ("train_step", 256)):
                t, zk = fg(model, dim, op, batch), peer("zuko", model, dim, op, batch)
                check("%s %s %d >= 2x zuko" % (w, op, batch),
                      None if None in (t, zk) else zk / t >= 2, fmt_ratio(zk, t))
            continue
        for op in ("log_prob", "log_prob_point"):
            t = fg(model, dim, op, 1)
            check("%s %s batch 1 <= 5 µs" % (w, op), None if t is None else t <= 5e-6,
                  fmt_time(t))
        t, fj = fg(model, dim, "log_prob", 256), peer("flowjax", model, dim, "log_prob", 256)
        check("%s log_prob 256 >= 3x FlowJAX" % w,
              None if None in (t, fj) else fj / t >= 3, fmt_ratio(fj, t))
        t = fg(model, dim, "log_prob", 65536)
        for p in PEERS:
            pt = peer(p, model, dim, "log_prob", 65536)
            check("%s log_prob 65536 >= 2x %s" % (w, p),
                  None if None in (t, pt) else pt / t >= 2, fmt_ratio(pt, t))
        t = fg(model, dim, "sample", 65536)
        faster = [x for x in (peer(p, model, dim, "sample", 65536) for p in PEERS) if x]
        best = min(faster) if faster else None
        check("%s sample 65536 >= 2x faster peer" % w,
              None if None in (t, best) else best / t >= 2, fmt_ratio(best, t))
        if model == "realnvp":
            # One step (mean NLL, gradient, Adam) on 256 rows, against FlowJAX's
            # jit-compiled step; zuko and flowgen in FlowJAX's own architecture for reference.
            t, fj = fg(model, dim, "train_step", 256), peer("flowjax", model, dim, "train_step", 256)
            zk = peer("zuko", model, dim, "train_step", 256)
            t_fj = fg("realnvp_fj", dim, "train_step", 256)
            detail = "%s vs FlowJAX %s = %s (vs zuko %s)" % (fmt_time(t), fmt_time(fj),
                                                            fmt_ratio(fj, t), fmt_ratio(zk, t))
            if t_fj is not None:
                detail += "; FlowJAX arch. %s = %s" % (fmt_time(t_fj), fmt_ratio(fj, t_fj))
            check("%s train_step 256 >= 2x FlowJAX" % w,
                  None if None in (t, fj) else fj / t >= 2, detail)
        if model == "elementwise16":
            for op, batch in (("log_prob", 1), ("log_prob", 256), ("log_prob", 65536)):
                t = fg(model, dim, op, batch)
                ps = [x for x in (peer(p, model, dim, op, batch) for p in PEERS) if x]
                best = min(ps) if ps else None
                check("%s %s %d >= 2x faster peer" % (w, op, batch),
                      None if None in (t, best) else best / t >= 2, fmt_ratio(best, t))
            fused, ref = fg(model, dim, "log_prob", 65536), fg(model, dim, "log_prob_reference", 65536)
            check("%s fused >= 3x unfused (65536)" % w,
                  None if None in (fused, ref) else ref / fused >= 3,
                  "%s unfused / %s fused = %s" % (fmt_time(ref), fmt_time(fused),
                                                  fmt_ratio(ref, fused)))
    print("targets:")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
