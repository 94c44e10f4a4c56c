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
        return PromotionDecision(True, "forced (--promote always)")
    if mode == "never":
        return PromotionDecision(False, "forced (--promote never)")
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
