"""The promotion rule: when a newly registered version becomes ``champion``, and when a
training job registers nothing because an existing version was trained the same way
(the aliases and tags themselves: :mod:`serverless_ml.registry`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from serverless_ml import defaults

PROMOTE_MODES = defaults.TRAIN_PROMOTE_MODES


@dataclass(frozen=True)
class PromotionDecision:
    """Whether to promote, and why (logged on the training run)."""

    promote: bool
    reason: str


def decide_promotion(
    challenger_accuracy: float, champion_accuracy: float | None, mode: str = "if-better", rows: int | None = None
) -> PromotionDecision:
    """Promote when there is no champion, or the challenger's holdout accuracy is above
    the champion's on the same holdout rows (a tie keeps the champion: an equal model is
    no reason to move inference); ``always``/``never`` override the rule.

    Args:
        challenger_accuracy: The new version's accuracy on the compared rows.
        champion_accuracy: The current champion scored on the same rows (the holdout rows
            it was not trained on), or ``None`` when there is no champion (or it cannot
            score these rows).
        mode: ``if-better`` (default), ``always`` or ``never``.
        rows: How many rows were compared (named in the reason).
    """
    on = f" on {rows} holdout rows the champion did not train on" if rows is not None else ""
    if mode not in PROMOTE_MODES:
        raise ValueError(f"promote mode must be one of {', '.join(PROMOTE_MODES)}, got {mode!r}")
    if mode == "always":
        return PromotionDecision(True, "forced by --promote always")
    if mode == "never":
        return PromotionDecision(False, "forced by --promote never")
    if champion_accuracy is None:
        return PromotionDecision(True, "no champion yet")
    if challenger_accuracy > champion_accuracy:
        return PromotionDecision(
            True, f"holdout accuracy {challenger_accuracy:.4f} > champion's {champion_accuracy:.4f}{on}"
        )
    if challenger_accuracy == champion_accuracy:
        return PromotionDecision(False, (
            f"holdout accuracy {challenger_accuracy:.4f} = champion's {champion_accuracy:.4f}{on}: "
            "a tie keeps the champion (--promote always promotes anyway)"
        ))
    return PromotionDecision(
        False, f"holdout accuracy {challenger_accuracy:.4f} < champion's {champion_accuracy:.4f}{on}"
    )


def training_fingerprint(parts: Mapping[str, object]) -> str:
    """A digest of what a training job trains from (its rows' digests, seed, folds,
    holdout, trials, search space and options): two jobs with the same fingerprint
    register the same model."""
    text = json.dumps({str(k): str(v) for k, v in parts.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def same_training_message(alias: str, version: str | int) -> str:
    """What ``sml train`` says when ``alias`` (version ``version``) was trained the same way
    and is given back instead of registering an identical version."""
    return (f"{alias} version {version} was trained on the same data, seed and search: kept; "
            "use --promote always to register anew")


def look_level(alpha: float, look: int) -> float:
    """The significance level of the live rule's ``look``-th judgement of one challenger:
    ``alpha / (look (look + 1))``.

    The rule looks again at every batch, over a window that mostly overlaps the last one;
    testing each look at ``alpha`` would promote a challenger no better than the champion
    far more often than ``alpha`` over its life (``python -m bench live_promotion`` measures it).
    The levels sum to ``alpha`` over all looks, so by the union bound the chance of any
    false promotion in a challenger's life stays below ``alpha`` whatever the looks share.
    """
    if look < 1:
        raise ValueError(f"look must be 1 or more, got {look}")
    return alpha / (look * (look + 1))


def decide_live_promotion(
    p_value_better: float, discordant: int, difference: float, rows: int, alpha: float = defaults.LIVE_PROMOTE_ALPHA,
    min_discordant: int = defaults.LIVE_PROMOTE_MIN_DISCORDANT, window: str = "", look: int = 1,
) -> PromotionDecision:
    """``--promote live``: promote the challenger when, on the live rows both models
    scored and whose labels are known, the one-sided McNemar exact test says it is right
    more often than the champion (``p_value_better`` below this look's level,
    :func:`look_level`) on at least ``min_discordant`` rows where exactly one of them is
    right.

    Args:
        p_value_better: The one-sided p-value (:func:`serverless_ml.inference.paired.mcnemar_exact`).
        discordant: Rows where exactly one model is right.
        difference: The challenger's accuracy minus the champion's on the paired rows.
        rows: The paired labelled rows.
        alpha: The chance of a false promotion over all of the challenger's looks.
        window: The days compared (named in the reason).
        look: Which judgement of this challenger this is (1: its first).
    """
    level = look_level(alpha, look)
    over = f" over {rows} paired labelled rows" + (f" ({window})" if window else "")
    at = f"look {look}: level {level:.3g} of {alpha} over the challenger's looks"
    if discordant < min_discordant:
        rows_word = "row" if discordant == 1 else "rows"
        return PromotionDecision(False, f"{discordant} discordant {rows_word} < {min_discordant} needed{over}")
    if p_value_better < level and difference > 0:
        return PromotionDecision(True, f"challenger more often right: accuracy difference {difference:+.4f}, "
                                       f"one-sided McNemar p = {p_value_better:.4g} < {level:.3g} ({at}){over}")
    return PromotionDecision(False, f"not shown better: accuracy difference {difference:+.4f}, "
                                    f"one-sided McNemar p = {p_value_better:.4g} >= {level:.3g} ({at}){over}")
