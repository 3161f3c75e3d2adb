"""FlowJAX (JAX CPU, jit) on the reference workloads of shared/peers/README.md.

Copied from ../shared/peers/bench_flowjax.py (the shared peer scripts); the one change is the
`--no-fit` flag, which skips the three two_moons fits (the slow part) when only the
throughput workloads are wanted: `python bench_flowjax.py [OUT.json] [--no-fit]`.
"""
import json, os, statistics, sys, time

import jax
import jax.numpy as jnp
import jax.random as jr
import equinox as eqx
import numpy as np
import optax
from flowjax.bijections import Affine, Chain, Tanh
from flowjax.distributions import Normal, Transformed
from flowjax.flows import coupling_flow

from workloads import two_moons, timeit

jax.config.update("jax_enable_x64", False)


def realnvp(dim, key):
    return coupling_flow(key, base_dist=Normal(jnp.zeros(dim)), transformer=Affine(),
                         flow_layers=8, nn_width=64, nn_depth=2, nn_activation=jax.nn.relu)


def elementwise_chain(dim, key):
    keys = jr.split(key, 8)
    layers = []
    for k in keys:
        layers.append(Affine(jr.normal(k, (dim,)) * 0.1, jnp.exp(jr.normal(k, (dim,)) * 0.1)))
        layers.append(Tanh((dim,)))
    return Transformed(Normal(jnp.zeros(dim)), Chain(layers))


def bench_model(name, flow, dim, results, train=True):
    log_prob = eqx.filter_jit(lambda f, x: f.log_prob(x))
    key = jr.key(1)
    for n in (1, 256, 65536):
        x = np.asarray(flow.sample(key, (n,)))
        x = jnp.asarray(x)
        run = lambda: log_prob(flow, x).block_until_ready()
        t = timeit(run, min_time=0.5 if n < 65536 else 2.0)
        results.append(dict(peer="flowjax", model=name, dim=dim, op="log_prob", batch=n, seconds=t))
    smp = eqx.filter_jit(lambda f, k: f.sample(k, (65536,)))
    t = timeit(lambda: smp(flow, key).block_until_ready(), min_time=2.0)
    results.append(dict(peer="flowjax", model=name, dim=dim, op="sample", batch=65536, seconds=t))
    if not train:
        return
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @eqx.filter_jit
    def step(params, state, x):
        def loss(p):
            return -jnp.mean(eqx.combine(p, static).log_prob(x))
        val, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, val

    x = flow.sample(key, (256,))
    holder = [params, state]

    def run():
        p, s, v = step(holder[0], holder[1], x)
        v.block_until_ready()
        holder[0], holder[1] = p, s
    t = timeit(run, min_time=1.0)
    results.append(dict(peer="flowjax", model=name, dim=dim, op="train_step", batch=256, seconds=t))


def fit_two_moons(results, steps=2000, batch=256, seed=0):
    rng = np.random.default_rng(seed)
    train = jnp.asarray(two_moons(rng, 20000))
    test = jnp.asarray(two_moons(np.random.default_rng(12345), 20000))
    flow = realnvp(2, jr.key(seed))
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @eqx.filter_jit
    def step(params, state, x):
        def loss(p):
            return -jnp.mean(eqx.combine(p, static).log_prob(x))
        val, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, val

    t0 = time.perf_counter()
    for i in range(steps):
        idx = rng.integers(0, train.shape[0], batch)
        params, state, _ = step(params, state, train[idx])
    jax.block_until_ready(params)
    wall = time.perf_counter() - t0
    nll = float(-jnp.mean(eqx.combine(params, static).log_prob(test)))
    results.append(dict(peer="flowjax", model="realnvp", dim=2, op="two_moons_fit",
                        steps=steps, batch=batch, seconds=wall, test_nll=nll, seed=seed))


def main(out):
    results = []
    key = jr.key(0)
    for dim in (2, 16):
        bench_model("realnvp", realnvp(dim, key), dim, results)
        print(results[-1], file=sys.stderr, flush=True)
    bench_model("elementwise16", elementwise_chain(64, key), 64, results, train=False)
    for seed in (() if "--no-fit" in sys.argv else (0, 1, 2)):
        fit_two_moons(results, seed=seed)
        print(results[-1], file=sys.stderr, flush=True)
    meta = dict(jax=jax.__version__, devices=str(jax.devices()), cores=os.cpu_count())
    json.dump(dict(meta=meta, results=results), open(out, "w"), indent=1)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else "flowjax.json")
