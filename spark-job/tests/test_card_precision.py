"""Card precision at k (evaluation.card_precision_at_k), without Spark: a
hand-computed example, and random days checked against a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from fraudflight_spark.errors import JobError
from fraudflight_spark.evaluation import card_precision_at_k


def test_a_card_counts_once_a_day_by_its_highest_score() -> None:
    # Day 1: card a (0.9, genuine; 0.2, fraud) -> 0.9 fraud; b 0.8 genuine;
    # c 0.7 fraud; d 0.1 fraud. Top 2: a (fraud), b -> 1/2.
    # Day 2: only card b, 0.5 fraud -> 1/1 (fewer cards than k).
    days = np.array([1, 1, 1, 1, 1, 2])
    cards = np.array(["a", "a", "b", "c", "d", "b"])
    scores = np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.5])
    labels = np.array([0, 1, 0, 1, 1, 1])
    got = card_precision_at_k(days, cards, scores, labels, k=2)
    assert got["per_day"] == {1: 0.5, 2: 1.0}
    assert got["mean"] == 0.75 and got["days"] == 2 and got["k"] == 2


def plain(days, cards, scores, labels, k):
    best: dict[tuple, list] = {}
    for d, c, s, y in zip(days, cards, scores, labels, strict=True):
        entry = best.setdefault((int(d), c), [s, 0])
        entry[0] = max(entry[0], s)
        entry[1] = max(entry[1], int(y))
    per_day = {}
    for day in sorted({d for d, _ in best}):
        ranked = sorted((v for (d, _), v in best.items() if d == day), key=lambda v: -v[0])
        if len(ranked) <= k:
            per_day[day] = sum(f for _, f in ranked) / len(ranked)
            continue
        # Fractional credit for the cards tied with the k-th.
        kth = ranked[k - 1][0]
        above = [f for s, f in ranked if s > kth]
        tied = [f for s, f in ranked if s == kth]
        per_day[day] = (sum(above) + sum(tied) * (k - len(above)) / len(tied)) / k
    return per_day


def test_cards_tied_with_the_kth_share_its_places() -> None:
    # Day 0: a 0.9 (fraud), then b, c, d all at 0.5 (b fraud). Top 2: a, and
    # one place shared by the three tied: 1 + 1/3 of a fraud, out of 2.
    got = card_precision_at_k(np.zeros(4, dtype=int), np.array(["a", "b", "c", "d"]),
                              np.array([0.9, 0.5, 0.5, 0.5]), np.array([1, 1, 0, 0]), k=2)
    assert got["per_day"] == {0: pytest.approx((1 + 1 / 3) / 2, abs=1e-15)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_days_agree_with_a_plain_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20_000
    days = rng.integers(0, 9, n)
    cards = np.array([f"c{i}" for i in rng.integers(0, 700, n)])
    # Coarse scores: many ties, broken by card.
    scores = np.round(rng.random(n), 2)
    labels = (rng.random(n) < 0.05).astype(int)
    got = card_precision_at_k(days, cards, scores, labels, k=50)
    want = plain(days, cards, scores, labels, 50)
    assert got["per_day"] == pytest.approx(want, abs=1e-12)
    assert got["mean"] == pytest.approx(np.mean(list(want.values())), abs=1e-15)


def test_no_rows_and_a_bad_k() -> None:
    empty = np.array([])
    assert card_precision_at_k(empty, empty, empty, empty)["mean"] is None
    with pytest.raises(JobError, match="k must be at least 1"):
        card_precision_at_k(empty, empty, empty, empty, k=0)
