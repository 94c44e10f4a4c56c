"""The promotion rule: when a newly registered version becomes ``champion``."""

from __future__ import annotations

from dataclasses import dataclass

PROMOTE_MODES = ("if-better", "always", "never")
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class PromotionDecision:
    """Whether to promote, and why (logged on the training run)."""

    promote: bool
    reason: str


def decide_promotion(
    challenger_accuracy: float, champion_accuracy: float | None, mode: str = "if-better", rows: int | None = None
) -> PromotionDecision:
    """Promote when there is no champion, or the challenger's holdout accuracy is at least
    the champion's on the same holdout rows; ``always``/``never`` override the rule.

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
    if challenger_accuracy >= champion_accuracy:
        return PromotionDecision(
            True, f"holdout accuracy {challenger_accuracy:.4f} >= champion's {champion_accuracy:.4f}{on}"
        )
    return PromotionDecision(
        False, f"holdout accuracy {challenger_accuracy:.4f} < champion's {champion_accuracy:.4f}{on}"
    )
