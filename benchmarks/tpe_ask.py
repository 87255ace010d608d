"""One TPE ask, Optuna's ``TPESampler`` against the engine's ``BatchTPESampler``, side by side.

    python benchmarks/tpe_ask.py                      # 100, 750 and 7,500 finished trials
    python benchmarks/tpe_ask.py --finished 1000 --asks 64 --rounds 3

In memory, for each number of finished trials (random log-float lr and reg, values from a
smooth function plus noise): a batch of ``--asks`` asks with the constant liar (each ask sees the
previous ones RUNNING), by each sampler in turn, ``--rounds`` times interleaved. Prints the ms per
ask of each, their ratio, and whether both drew the same params.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import optuna

from sweeps.adapter import BatchTPESampler

SPACE = {"model.learning_rate": optuna.distributions.FloatDistribution(1e-7, 1e-3, log=True),
         "model.reg": optuna.distributions.FloatDistribution(1e-4, 1e5, log=True)}


def finished_study(n_finished: int) -> optuna.Study:
    rng = np.random.default_rng(0)
    study = optuna.create_study(direction="maximize")
    for _ in range(n_finished):
        params = {k: float(np.exp(rng.uniform(np.log(d.low), np.log(d.high)))) for k, d in SPACE.items()}
        value = -abs(np.log10(params["model.learning_rate"]) + 5) - 0.1 * rng.random()
        study.add_trial(optuna.trial.create_trial(params=params, distributions=SPACE, value=value))
    return study


def time_asks(sampler_class, n_finished: int, n_asks: int) -> tuple:
    """(ms per ask, the params drawn) for one batch of asks on a new copy of the study."""
    study = finished_study(n_finished)
    study.sampler = sampler_class(seed=1, constant_liar=True)
    start = time.perf_counter()
    drawn = [study.ask(fixed_distributions=SPACE).params for _ in range(n_asks)]
    return (time.perf_counter() - start) / n_asks * 1e3, drawn


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--finished", type=int, nargs="+", default=[100, 750, 7500])
    parser.add_argument("--asks", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{'finished':>9} {'TPESampler ms':>14} {'BatchTPESampler ms':>19} {'ratio':>6}  same draws")
    for n in args.finished:
        stock, batch, same = [], [], True
        for _ in range(args.rounds):
            (t_stock, d_stock), (t_batch, d_batch) = (time_asks(c, n, args.asks)
                                                      for c in (optuna.samplers.TPESampler, BatchTPESampler))
            stock.append(t_stock)
            batch.append(t_batch)
            same &= d_stock == d_batch
        s, b = statistics.median(stock), statistics.median(batch)
        print(f"{n:>9} {s:>14.2f} {b:>19.2f} {s / b:>5.1f}x  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
