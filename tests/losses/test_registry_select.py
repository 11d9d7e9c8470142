"""select_specs: the labelled loss specs of the labs' `losses` parameter."""

from __future__ import annotations

import pytest

from workbench.losses import select_specs

TABLE = {"clip": {"name": "clip"}, "bayes": {"name": "bayes"}, "bayes-g0.9": {"name": "bayes", "gamma": 0.9}}


def test_labels_select_copies_in_the_given_order():
    chosen = select_specs(["bayes-g0.9", "clip"], TABLE)
    assert list(chosen) == ["bayes-g0.9", "clip"] and chosen["bayes-g0.9"] == {"name": "bayes", "gamma": 0.9}
    chosen["clip"]["temperature"] = 1.0
    assert TABLE["clip"] == {"name": "clip"}


def test_none_selects_the_default_and_all_selects_the_table():
    assert list(select_specs(None, TABLE)) == list(TABLE)
    assert list(select_specs(None, TABLE, {"clip": {"name": "clip"}})) == ["clip"]
    assert list(select_specs(["all"], TABLE, {"clip": {"name": "clip"}})) == list(TABLE)


@pytest.mark.parametrize("labels", [[], "clip", ["clip", "nope"]])
def test_bad_labels_name_the_parameter_and_the_allowed_labels(labels):
    with pytest.raises(ValueError, match=r"losses .*clip, bayes, bayes-g0\.9"):
        select_specs(labels, TABLE)
