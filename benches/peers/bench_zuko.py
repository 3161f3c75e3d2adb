"""zuko (PyTorch CPU, eager) on the reference workloads of shared/peers/README.md.

Copied from ../shared/peers/bench_zuko.py (the shared peer scripts), with two changes: the
`--no-fit` flag, which skips the three two_moons fits (the slow part) when only the
throughput workloads are wanted, and the layer-library workloads `nsf` (4 spline couplings,
8 bins on [-5, 5]) and `maf` (4 affine autoregressive layers), dim 16, MLP 64-64 ReLU
(`--no-layers` skips them): `python bench_zuko.py [OUT.json] [--no-fit] [--no-layers]`.
"""
import json, os, sys, time

import numpy as np
import torch
import zuko
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution, Independent

from workloads import two_moons, timeit


def realnvp(dim):
    return zuko.flows.RealNVP(features=dim, transforms=8, hidden_features=(64, 64),
                              activation=torch.nn.ReLU)


def nsf(dim):
    # Spline couplings: with passes=2 zuko's NSF conditions the second half of the
    # coordinates on the first and back (its MADE also gives the conditioning half an
    # input-independent spline, which flowgen's coupling leaves as the identity).
    return zuko.flows.NSF(features=dim, transforms=4, hidden_features=(64, 64), passes=2,
                          activation=torch.nn.ReLU)


def maf(dim):
    # Affine MAF; zuko flips the order between transforms.
    return zuko.flows.MAF(features=dim, transforms=4, hidden_features=(64, 64),
                          activation=torch.nn.ReLU)


def elementwise_chain(dim):
    g = torch.Generator().manual_seed(0)
    layers = []
    for _ in range(8):
        layers.append(AffineTransform(torch.randn(dim, generator=g) * 0.1,
                                      torch.exp(torch.randn(dim, generator=g) * 0.1)))
        layers.append(TanhTransform())
    base = Independent(Normal(torch.zeros(dim), torch.ones(dim)), 1)
    return TransformedDistribution(base, layers)


def bench_model(name, dist_fn, dim, results, module=None):
    with torch.inference_mode():
        for n in (1, 256, 65536):
            x = dist_fn().sample((n,))
            t = timeit(lambda: dist_fn().log_prob(x), min_time=0.5 if n < 65536 else 2.0)
            results.append(dict(peer="zuko", model=name, dim=dim, op="log_prob", batch=n, seconds=t))
        t = timeit(lambda: dist_fn().sample((65536,)), min_time=2.0)
        results.append(dict(peer="zuko", model=name, dim=dim, op="sample", batch=65536, seconds=t))
    if module is None:
        return
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    with torch.no_grad():
        x = module().sample((256,))

    def step():
        loss = -module().log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = timeit(step, min_time=1.0)
    results.append(dict(peer="zuko", model=name, dim=dim, op="train_step", batch=256, seconds=t))


def fit_two_moons(results, steps=2000, batch=256, seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train = torch.from_numpy(two_moons(rng, 20000))
    test = torch.from_numpy(two_moons(np.random.default_rng(12345), 20000))
    flow = realnvp(2)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, train.shape[0], batch))
        loss = -flow().log_prob(train[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    wall = time.perf_counter() - t0
    with torch.no_grad():
        nll = float(-flow().log_prob(test).mean())
    results.append(dict(peer="zuko", model="realnvp", dim=2, op="two_moons_fit",
                        steps=steps, batch=batch, seconds=wall, test_nll=nll, seed=seed))


def main(out):
    results = []
    torch.manual_seed(0)
    for dim in (2, 16):
        flow = realnvp(dim)
        bench_model("realnvp", flow, dim, results, module=flow)
        print(results[-1], file=sys.stderr, flush=True)
    if "--no-layers" not in sys.argv:
        for name, make in (("nsf", nsf), ("maf", maf)):
            flow = make(16)
            bench_model(name, flow, 16, results, module=flow)
            print(results[-1], file=sys.stderr, flush=True)
    chain = elementwise_chain(64)
    bench_model("elementwise16", lambda: chain, 64, results)
    for seed in (() if "--no-fit" in sys.argv else (0, 1, 2)):
        fit_two_moons(results, seed=seed)
        print(results[-1], file=sys.stderr, flush=True)
    meta = dict(torch=torch.__version__, zuko=zuko.__version__, threads=torch.get_num_threads(),
                cores=os.cpu_count())
    json.dump(dict(meta=meta, results=results), open(out, "w"), indent=1)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else "zuko.json")
