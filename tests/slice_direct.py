"""Accuracy per slice computed directly with pandas (``pd.cut``, ``groupby``) on a batch's
rows: what ``serverless_ml.inference.slices`` must agree with (``tests/unit/test_slices.py``
and ``tests/integration/test_slice_runs.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from serverless_ml.inference import slices


def direct_table(plan: slices.SlicePlan, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Every slice's figures computed with pandas on ``rows`` (feature values, ``actual``,
    ``prediction``, ``probability``): ``pd.cut`` at the plan's edges (left-closed, open
    ends) or the value itself, missing as a group of its own (``groupby(dropna=False)``)."""
    frame = rows.assign(labelled=rows["actual"].notna(), right=rows["actual"].notna() & (rows["actual"] == rows["prediction"]))
    out = []
    for feature in plan.features:
        if feature.kind == slices.BINS:
            cuts = [-np.inf, *feature.edges, np.inf]
            group = pd.cut(frame[feature.name], cuts, right=False, labels=False)
        else:
            group = frame[feature.name]
        grouped = frame.groupby(group, dropna=False, sort=True)
        summary = grouped.agg(rows=("labelled", "size"), labelled=("labelled", "sum"), correct=("right", "sum"),
                              confidence=("probability", "mean"))
        for key, line in summary.iterrows():
            labelled, rows_n = int(line["labelled"]), int(line["rows"])
            out.append({
                "feature": feature.name, "missing": bool(pd.isna(key)), "rows": rows_n, "labelled": labelled,
                "correct": int(line["correct"]),
                "realized": line["correct"] / labelled if labelled >= plan.min_rows else None,
                "estimated": float(line["confidence"]) if rows_n >= plan.min_rows else None,
            })
    return out


def assert_matches_direct(plan: slices.SlicePlan, table: slices.SliceTable, rows: pd.DataFrame) -> None:
    want = direct_table(plan, rows)
    got = [{"feature": s.feature, "missing": s.missing, "rows": s.rows, "labelled": s.labelled, "correct": s.correct,
            "realized": s.realized, "estimated": s.estimated} for s in table.slices]
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        for name in ("feature", "missing", "rows", "labelled", "correct"):
            assert a[name] == b[name], (a, b)
        for name in ("realized", "estimated"):
            assert (a[name] is None) == (b[name] is None), (a, b)
            if b[name] is not None:
                assert a[name] == pytest.approx(b[name], rel=1e-12), (a, b)
    assert sum(s.rows for s in table.slices if s.feature == plan.features[0].name) == len(rows)
