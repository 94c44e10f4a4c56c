"""``--promote live``'s false promotions and power, on simulated challenger lives: the rule
``sml infer`` applies (the one-sided McNemar exact test at a level spent over the
challenger's looks, :func:`serverless_ml.training.promotion.look_level`) beside the rule
that tests every look at ``alpha`` and a fixed-horizon reference (one test, at ``alpha``,
when the rolling window is first full), all on the same simulated histories in one run.

A challenger's life: ``--days`` daily batches of ``--rows`` labelled rows each, both models
scoring every row. Each row is one of: only the champion right, only the challenger right,
or neither/both (the test reads only the first two): with discordant share ``d``
(``--discordant``) and accuracy difference ``delta`` (challenger minus champion), a row is
"only the challenger right" with probability ``(d + delta) / 2`` and "only the champion
right" with ``(d - delta) / 2``, independently. Each day the rule judges the rolling window
(``defaults.INFER_ROLLING_DAYS`` days, as ``sml infer`` does) with the project's own
``paired.mcnemar_exact`` and ``promotion.decide_live_promotion``; a look counts only when
the window holds at least ``LIVE_PROMOTE_MIN_DISCORDANT`` discordant rows (fewer: no test,
as in ``sml infer``).

Printed per difference: the share of lives in which each rule promoted the challenger
(with ``delta = 0`` that is the false-promotion rate; the goal is at most ``alpha`` for the
rule we ship, checked against the upper end of its 95 % Monte Carlo interval), its 95 %
interval, and the median day of promotion among the lives promoted. What the simulation
leaves out: labels arriving late or for part of the rows (fewer labelled rows a day: use a
smaller ``--rows``), and a difference that changes over the life.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from bench import write_results

RULES = ("spent (ours)", "every look at alpha", "fixed horizon")


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson 95 % interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def simulate_lives(delta: float, discordant: float, rows: int, days: int, window: int, lives: int,
                   seed: int) -> dict[str, list[int | None]]:
    """The day each rule promoted the challenger in each of ``lives`` simulated lives
    (``None``: never within ``days``)."""
    from serverless_ml import defaults
    from serverless_ml.inference.paired import mcnemar_exact
    from serverless_ml.training.promotion import decide_live_promotion

    rng = np.random.default_rng(seed)
    p_challenger, p_champion = (discordant + delta) / 2, (discordant - delta) / 2
    if p_champion < 0 or p_challenger > 1:
        raise SystemExit(f"error: --discordant {discordant} cannot hold a difference of {delta}")
    alpha, needed = defaults.LIVE_PROMOTE_ALPHA, defaults.LIVE_PROMOTE_MIN_DISCORDANT
    out: dict[str, list[int | None]] = {rule: [] for rule in RULES}
    cache: dict[tuple[int, int], float] = {}
    for _ in range(lives):
        daily = rng.multinomial(rows, [p_champion, p_challenger, 1 - p_champion - p_challenger], size=days)[:, :2]
        cumulative = np.vstack([np.zeros(2, dtype=np.int64), np.cumsum(daily, axis=0)])
        promoted: dict[str, int | None] = dict.fromkeys(RULES)
        looks = 0
        for day in range(1, days + 1):
            b, c = (int(v) for v in cumulative[day] - cumulative[max(0, day - window)])
            if b + c < needed:
                continue
            if (b, c) not in cache:
                cache[(b, c)] = mcnemar_exact(b, c).p_value_better
            p = cache[(b, c)]
            difference = (c - b) / (rows * min(day, window))
            looks += 1
            if promoted["spent (ours)"] is None and decide_live_promotion(p, b + c, difference, rows, look=looks).promote:
                promoted["spent (ours)"] = day
            if promoted["every look at alpha"] is None and p < alpha and difference > 0:
                promoted["every look at alpha"] = day
            if day == window and p < alpha and difference > 0:
                promoted["fixed horizon"] = day
        for rule in RULES:
            out[rule].append(promoted[rule])
    return out


def summarise(days: list[int | None]) -> dict[str, Any]:
    hits = [d for d in days if d is not None]
    low, high = wilson(len(hits), len(days))
    return {"promoted": len(hits) / len(days), "ci_low": low, "ci_high": high,
            "median_day": float(np.median(hits)) if hits else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench live_promotion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lives", type=int, default=2000, help="simulated challenger lives per difference")
    parser.add_argument("--days", type=int, default=60, help="daily batches in a life")
    parser.add_argument("--rows", type=int, default=100, help="labelled rows a day, scored by both models")
    parser.add_argument("--discordant", type=float, default=0.10, help="share of rows exactly one model gets right")
    parser.add_argument("--deltas", default="0,0.01,0.02,0.04",
                        help="accuracy differences (challenger minus champion), comma-separated; 0 measures false promotions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        deltas = [float(v) for v in args.deltas.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--deltas {args.deltas!r}: expected numbers separated by commas")
    if args.lives < 10 or args.days < 1 or args.rows < 1 or not 0 < args.discordant <= 1:
        parser.error("--lives >= 10, --days >= 1, --rows >= 1 and --discordant in (0, 1] are needed")

    from serverless_ml import defaults

    window, alpha = defaults.INFER_ROLLING_DAYS, defaults.LIVE_PROMOTE_ALPHA
    print(f"bench live_promotion: {args.lives} lives x {args.days} days x {args.rows} labelled rows, discordant share "
          f"{args.discordant}, window {window} days, alpha {alpha}")
    started = time.perf_counter()
    results: dict[str, Any] = {"settings": vars(args) | {"window": window, "alpha": alpha}, "deltas": {}}
    status = 0
    for i, delta in enumerate(deltas):
        lives = simulate_lives(delta, args.discordant, args.rows, args.days, window, args.lives, args.seed + i)
        figures = {rule: summarise(lives[rule]) for rule in RULES}
        results["deltas"][str(delta)] = figures
        label = "false promotions" if delta == 0 else "promoted (power)"
        print(f"  difference {delta:+.3f}: {label}")
        for rule in RULES:
            f = figures[rule]
            median = f"median day {f['median_day']:.0f}" if f["median_day"] is not None else "never"
            print(f"    {rule:<20} {f['promoted']:6.1%}  (95 % {f['ci_low']:.1%}-{f['ci_high']:.1%})  {median}")
        if delta == 0:
            ours, reference = figures["spent (ours)"], figures["every look at alpha"]
            ok = ours["ci_low"] <= alpha
            status = status or (0 if ok else 1)
            print(f"    goal: ours <= {alpha:.0%} over a life: {'PASS' if ok else 'FAIL'} "
                  f"(every-look rule: {reference['promoted']:.1%}, {reference['promoted'] / max(alpha, 1e-12):.1f}x alpha)")
        else:
            ours, fixed = figures["spent (ours)"]["promoted"], figures["fixed horizon"]["promoted"]
            print(f"    power ratio ours / fixed horizon: {ours / fixed:.2f}" if fixed else "    fixed horizon never promoted")
    print(f"  {time.perf_counter() - started:.1f} s")
    write_results("live_promotion", results)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
