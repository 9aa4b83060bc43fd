"""engine.demo: the headline comparison and the mean over seeds."""

import pytest

from lowlabel.engine.demo import DemoResult, mean_over_seeds


def test_mean_over_seeds_hand_computed() -> None:
    rows = mean_over_seeds({"a": [{"dice": 0.5, "asd": 2.0}, {"dice": 0.7, "asd": 4.0}, {"dice": 0.9, "asd": 6.0}],
                            "b": [{"dice": 0.25, "asd": 1.0}]})
    assert rows["a"]["dice"] == pytest.approx(0.7)
    assert rows["a"]["dice_std"] == pytest.approx((0.08 / 3) ** 0.5)  # deviations -0.2, 0, 0.2
    assert rows["a"]["asd"] == pytest.approx(4.0) and rows["a"]["asd_std"] == pytest.approx((8 / 3) ** 0.5)
    assert rows["b"] == {"dice": 0.25, "asd": 1.0}  # one run: no spread to report


@pytest.mark.parametrize(("higher", "wins"), [(True, True), (False, False)])
def test_wins_follows_the_metric_direction(higher: bool, wins: bool) -> None:
    result = DemoResult(slug="x", metric="m", method="ours", baseline="theirs",
                        rows={"ours": {"m": 2.0}, "theirs": {"m": 1.0}}, higher_is_better=higher)
    assert result.wins is wins


def test_verdict_names_the_floor_only_when_the_method_loses() -> None:
    rows = {"ours": {"m": 0.5}, "strong": {"m": 0.6}, "random": {"m": 0.1}}
    losing = DemoResult(slug="x", metric="m", method="ours", baseline="strong", rows=rows, floor="random")
    assert (losing.wins, losing.works) == (False, True)
    assert losing.verdict == "ours does NOT beat strong on m (it does beat random)."
    broken = DemoResult(slug="x", metric="m", method="ours", baseline="strong", rows={**rows, "random": {"m": 0.9}},
                        floor="random")
    assert (broken.works, broken.verdict) == (False, "ours does NOT beat strong on m.")
    no_floor = DemoResult(slug="x", metric="m", method="ours", baseline="random", rows=rows)
    assert (no_floor.wins, no_floor.works, no_floor.verdict) == (True, True, "ours beats random on m.")
    assert no_floor.to_json()["verdict"] == no_floor.verdict
