"""The generated reasoning tasks: balanced, answered right (re-derived from labels and measurements),
split by the data set's split, deterministic, and refusing bad input."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import torch

from workbench.data import captions as cap
from workbench.data.multimodal import seeded_split
from workbench.data.reasoning import (
    THICKER_MARGIN,
    VE_FORMS,
    DigitFacts,
    entailment_task,
    nlvr_task,
    reasoning_tasks,
    vqa_task,
)

WORD = {w: i for i, w in enumerate(cap.DIGIT_WORDS)}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]
    labels = data.target.astype(np.int64)
    train, test = seeded_split(labels, 0.25, 0)
    thresholds = cap.dataset_thresholds(images)
    return images, labels, train, test, thresholds


@pytest.fixture(scope="module")
def tasks(digits):
    images, labels, train, test, thresholds = digits
    return reasoning_tasks(
        images, labels, train, test, thresholds=thresholds, per_kind_train=120, per_kind_test=60
    )


@pytest.fixture(scope="module")
def measured(digits):
    """Descriptor buckets re-derived from the raw measurements and thresholds (not describe_images)."""
    images, _, _, _, t = digits
    m = cap.measure_images(images)
    lo, hi = t["thickness"]
    thick = np.where(m["stroke_width"] > hi, "thick", np.where(m["stroke_width"] < lo, "thin", "medium"))
    slant = np.where(m["slant"] > t["slant"], "right", np.where(m["slant"] < -t["slant"], "left", "upright"))
    lo, hi = t["size"]
    size = np.where(m["box_area"] > hi, "large", np.where(m["box_area"] < lo, "small", "medium"))
    return {"thickness": thick, "slant": slant, "size": size, "width": m["stroke_width"]}


def _claim_truth(claim: str, label: int, r: int, measured) -> bool:
    if m := re.fullmatch(r"the digit is an? (\w+)", claim):
        return label == WORD[m.group(1)]
    if m := re.fullmatch(r"the digit is (large|small)", claim):
        assert measured["size"][r] in ("large", "small")
        return measured["size"][r] == m.group(1)
    if m := re.fullmatch(r"the digit is (even|odd)", claim):
        return (label % 2 == 0) == (m.group(1) == "even")
    if m := re.fullmatch(r"the digit is larger than (\w+)", claim):
        return label > WORD[m.group(1)]
    if m := re.fullmatch(r"the strokes are (thick|thin)", claim):
        assert measured["thickness"][r] in ("thick", "thin")  # only clear-cut images are asked
        return measured["thickness"][r] == m.group(1)
    if m := re.fullmatch(r"the digit leans to the (left|right)", claim):
        assert measured["slant"][r] in ("left", "right")
        return measured["slant"][r] == m.group(1)
    raise AssertionError(f"unexpected claim {claim!r}")


def test_vqa_answers_are_right(tasks, digits, measured):
    labels = digits[1]
    task = tasks["vqa"]
    for split in (task.train, task.test):
        for (r,), question, answer in zip(split.images, split.texts, split.answers, strict=True):
            label, said = labels[r], task.answer_names[answer]
            if question == "which digit is this?":
                assert said == cap.DIGIT_WORDS[label]
            elif m := re.fullmatch(r"is it (even|odd)\?", question):
                assert said == ("yes" if (label % 2 == 0) == (m.group(1) == "even") else "no")
            elif m := re.fullmatch(r"is it larger than (\w+)\?", question):
                assert said == ("yes" if label > WORD[m.group(1)] else "no")
            elif question == "is the stroke thick or thin?":
                assert said == measured["thickness"][r]
            elif question == "does it lean left or right?":
                assert said == measured["slant"][r]
            else:
                assert question == "is it small or large?" and said == measured["size"][r]


def test_entailment_answers_are_right(tasks, digits, measured):
    labels = digits[1]
    task = tasks["ve"]
    for split in (task.train, task.test):
        for (r,), text, answer in zip(split.images, split.texts, split.answers, strict=True):
            said = task.answer_names[answer]
            if " and " in text:
                claim, form = text.split(" and ")[0], "and"
            elif " or " in text:
                claim, form = text.split(" or ")[0], "or"
            else:
                claim, form = text, "plain"
            true = _claim_truth(claim, labels[r], r, measured)
            _, if_true, if_false = VE_FORMS[form]
            assert said == (if_true if true else if_false), text
    # the three-way logic by hand: a conjunction is never entailed, a disjunction never contradicted
    for text, answer in zip(task.train.texts, task.train.answers, strict=True):
        if " and " in text:
            assert task.answer_names[answer] != "entailment"
        if " or " in text:
            assert task.answer_names[answer] != "contradiction"


def test_nlvr_answers_are_right(tasks, digits, measured):
    labels = digits[1]
    task = tasks["nlvr"]
    for split in (task.train, task.test):
        for (left, right), text, answer in zip(split.images, split.texts, split.answers, strict=True):
            a, b = labels[left], labels[right]
            truth = {
                "the left digit is larger than the right": a > b,
                "the left digit is smaller than the right": a < b,
                "both digits are odd": a % 2 == 1 and b % 2 == 1,
                "both digits are even": a % 2 == 0 and b % 2 == 0,
                "the two digits are the same": a == b,
            }.get(text)
            if truth is None:
                assert text == "the left digit has thicker strokes than the right"
                diff = measured["width"][left] - measured["width"][right]
                assert abs(diff) >= THICKER_MARGIN
                truth = diff > 0
            assert left != right
            assert task.answer_names[answer] == ("true" if truth else "false")


def test_tasks_are_balanced(tasks):
    for name, task in tasks.items():
        for split in (task.train, task.test):
            assert len(split) > 0
            for kind in np.unique(split.kinds):
                counts = Counter(split.answers[split.kinds == kind].tolist())
                assert len(set(counts.values())) == 1, (name, kind, counts)  # every answer equally often
                assert len(counts) == task.info["answers_per_kind"][kind]
            if name != "vqa":  # one answer set for every kind: balanced overall too
                assert len(set(Counter(split.answers.tolist()).values())) == 1, name
    assert tasks["ve"].chance == pytest.approx(1 / 3)
    assert tasks["nlvr"].chance == pytest.approx(0.5)
    assert tasks["ve"].info["majority"] == pytest.approx(1 / 3)


def test_splits_use_the_data_sets_split(tasks, digits):
    _, _, train, test, _ = digits
    for task in tasks.values():
        assert np.isin(task.train.images, train).all()
        assert np.isin(task.test.images, test).all()


def test_tasks_are_deterministic(digits):
    images, labels, train, test, thresholds = digits
    facts = DigitFacts.measure(images, labels, thresholds)
    a = nlvr_task(facts, train, test, per_kind_train=20, per_kind_test=10, seed=4)
    b = nlvr_task(facts, train, test, per_kind_train=20, per_kind_test=10, seed=4)
    c = nlvr_task(facts, train, test, per_kind_train=20, per_kind_test=10, seed=5)
    assert a.train.texts == b.train.texts and np.array_equal(a.train.images, b.train.images)
    assert not np.array_equal(a.train.images, c.train.images)


def test_bad_input_names_the_parameter(digits):
    images, labels, train, test, thresholds = digits
    facts = DigitFacts.measure(images, labels, thresholds)
    with pytest.raises(ValueError, match="tasks has unknown"):
        reasoning_tasks(images, labels, train, test, tasks=["vqa", "captioning"])
    with pytest.raises(ValueError, match="vqa_kinds has unknown"):
        vqa_task(facts, train, test, kinds=["digit", "colour"])
    with pytest.raises(ValueError, match=r"answers\['vqa'\] does not cover the answer 'thick'.*train split"):
        vqa_task(facts, train, test, kinds=["thickness"], answers=["yes", "no", "thin"])
    with pytest.raises(ValueError, match="per_kind_test"):
        entailment_task(facts, train, test, per_kind_test=1)
    with pytest.raises(ValueError, match="digit labels"):
        DigitFacts.measure(images[:3], np.array([1, 2, 12]))
    with pytest.raises(ValueError, match="answers names task"):
        reasoning_tasks(images, labels, train, test, tasks=["vqa"], answers={"ve": ["entailment"]})


def test_reasoning_task_names_the_tasks_and_the_wrappers_are_it(digits):
    from workbench.data.reasoning import reasoning_task

    images, labels, train, test, thresholds = digits
    facts = DigitFacts.measure(images, labels, thresholds)
    with pytest.raises(ValueError, match=r"name must be one of vqa, ve, nlvr; got 'captioning'"):
        reasoning_task("captioning", facts, train, test)
    direct = reasoning_task("nlvr", facts, train, test, per_kind_train=20, per_kind_test=10, seed=4)
    wrapped = nlvr_task(facts, train, test, per_kind_train=20, per_kind_test=10, seed=4)
    assert direct.train.texts == wrapped.train.texts
