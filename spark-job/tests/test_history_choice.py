"""When train.py trains with the history features, without Spark: by
default whenever the input covers the warm-up and a week after it,
--no-history never, --history or an error naming what is missing."""

from __future__ import annotations

import pytest

from fraudflight_spark import history
from fraudflight_spark.errors import JobError

DAY = history.DAY
NEED = history.warm_up_days() + history.MIN_DAYS_AFTER_WARM_UP


def test_history_by_default_when_the_input_covers_the_warm_up() -> None:
    # Calendar days: the first day's last second to the 37th day's first.
    assert history.choose(None, DAY - 1, (NEED - 1) * DAY) == (True, "")
    assert history.choose(True, 1_000, 1_000 + 98 * DAY) == (True, "")


def test_a_short_input_trains_without_history_and_says_why() -> None:
    used, why = history.choose(None, 0, (NEED - 1) * DAY - 1)
    assert not used
    assert f"covers {NEED - 1} days" in why
    assert f"need {NEED}" in why and f"{history.warm_up_days()} to warm" in why


def test_no_history_opts_out_whatever_the_input() -> None:
    assert history.choose(False, 0, 400 * DAY) == (False, "--no-history")


def test_history_asked_for_on_a_short_input_is_an_error() -> None:
    with pytest.raises(JobError, match=r"--history: the input covers 12 days"):
        history.choose(True, 0, 12 * DAY - 1)
