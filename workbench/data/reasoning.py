"""Reasoning tasks generated offline from labelled digit images: VQA, visual entailment, NLVR2-like pairs.

Every example is an image (or a pair of images), a text and an answer, derived from the digit's label
and from descriptors measured on the image (``workbench.data.captions``: stroke width, slant, box size):

* **vqa** (:func:`vqa_task`): a question about one image, answered from :data:`VQA_ANSWERS`:
  "which digit is this?" (ten answers), "is it even?", "is it odd?", "is it larger than k?" (yes / no),
  "is the stroke thick or thin?", "does it lean left or right?", "is it small or large?";
* **ve** (:func:`entailment_task`): a hypothesis about one image that the image entails, contradicts,
  or leaves undetermined. A claim X (the digit is a k, is even, is larger than k, has thick strokes,
  leans right, is large, ...) is stated plainly, joined by "and" to a fact U that no image shows ("the
  writer was left-handed"), or joined to it by "or" (:data:`VE_FORMS`): "X" is entailed or contradicted,
  "X and U" undetermined or contradicted, "X or U" entailed or undetermined, as X is true or false;
* **nlvr** (:func:`nlvr_task`): two images and a statement about them ("the left digit is larger than
  the right", "both digits are odd", "the two digits are the same", "the left digit has thicker strokes
  than the right", ...), true or false.

Each task has a train split drawn from the data set's training images and a test split from its test
images (held out from pre-training too). Within every kind of question, each answer appears equally
often (the counts are exactly equal, the smallest pool setting the number; for ve, each answer within
each form), so chance is known: the
``chance`` of a task is the accuracy of guessing uniformly among the answers its kind of question
allows, and ``majority`` that of always giving the most frequent training answer. ``text_only`` is a
measured baseline that sees no image: the most frequent training answer of each exact text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench.data import captions as cap

TASKS = ("vqa", "ve", "nlvr")
VQA_KINDS = ("digit", "even", "odd", "larger", "thickness", "slant", "size")
VE_KINDS = ("digit", "parity", "larger", "thickness", "slant", "size")
NLVR_KINDS = ("larger", "smaller", "both_odd", "both_even", "same", "thicker")
VQA_ANSWERS: tuple[str, ...] = (
    *cap.DIGIT_WORDS,
    "yes",
    "no",
    "thick",
    "thin",
    "left",
    "right",
    "small",
    "large",
)
VE_ANSWERS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
NLVR_ANSWERS: tuple[str, ...] = ("true", "false")
KINDS = {"vqa": VQA_KINDS, "ve": VE_KINDS, "nlvr": NLVR_KINDS}
ANSWERS = {"vqa": VQA_ANSWERS, "ve": VE_ANSWERS, "nlvr": NLVR_ANSWERS}

#: Facts that no digit image can show: a claim joined to one of them is undetermined when true.
UNKNOWABLE = (
    "the writer was left-handed",
    "it was written in pencil",
    "it was written in the morning",
    "the writer was in a hurry",
)
THICKER_MARGIN = 0.5
"""Two digits' stroke widths (pixels of a 28-pixel frame) must differ by this much for "thicker"."""


@dataclass
class DigitFacts:
    """What the tasks may ask about each image: its digit and its measured descriptors."""

    labels: np.ndarray
    thickness: np.ndarray  # "thin" | "medium-weight" | "thick"
    slant: np.ndarray  # "left-leaning" | "upright" | "right-leaning"
    size: np.ndarray  # "small" | "medium-sized" | "large"
    stroke_width: np.ndarray  # pixels, scaled to a 28-pixel frame

    @classmethod
    def measure(cls, images, labels, thresholds: dict | None = None) -> DigitFacts:
        """Describe ``images`` (N, 1, H, W) with ``thresholds`` (default: the tertiles of these images)."""
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(
                f"reasoning tasks need digit labels 0..9, got values {labels.min()}..{labels.max()}"
            )
        if thresholds is None:
            thresholds = cap.dataset_thresholds(images)
        thresholds = {k: tuple(v) if isinstance(v, list) else v for k, v in thresholds.items()}
        described = cap.describe_images(images, thresholds)
        if len(described) != len(labels):
            raise ValueError(f"images has {len(described)} rows but labels has {len(labels)}")

        def column(key: str) -> np.ndarray:
            return np.array([d[key] for d in described])

        return cls(labels, column("thickness"), column("slant"), column("size"), column("stroke_width"))


@dataclass
class TaskSplit:
    """Examples of one split: ``images`` (n, k) rows of the data set (k = 2 for pairs: left, right),
    ``texts`` (n,), ``answers`` (n,) indices into the task's ``answer_names``, ``kinds`` (n,)."""

    images: np.ndarray
    texts: list[str]
    answers: np.ndarray
    kinds: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class ReasoningTask:
    """A generated task: its answer vocabulary, train and test splits, and its chance levels."""

    name: str
    answer_names: list[str]
    train: TaskSplit
    test: TaskSplit
    info: dict = field(default_factory=dict)

    @property
    def chance(self) -> float:
        return float(self.info["chance"])


# --------------------------------------------------------------------------------------------- sampling


class _Uncovered(ValueError):
    """An answer of a split that the answer vocabulary lacks."""


Candidate = tuple[tuple[int, ...], str, str, str]  # (image rows, text, answer, stratum)
Group = tuple[str, str]  # (stratum, answer): the cells that are balanced


def _balanced(
    candidates: list[Candidate], groups: Sequence[Group], per_kind: int, rng: np.random.Generator
) -> list[Candidate]:
    """Equal numbers of every (stratum, answer) group: ``min(per_kind // len(groups), smallest pool)``
    of each, drawn without replacement."""
    pools: dict[Group, list[Candidate]] = {g: [] for g in groups}
    for c in candidates:
        pools[(c[3], c[2])].append(c)
    count = min([per_kind // len(groups)] + [len(p) for p in pools.values()])
    chosen: list[Candidate] = []
    for group in groups:
        pool = pools[group]
        for i in sorted(rng.choice(len(pool), size=count, replace=False)):
            chosen.append(pool[int(i)])
    return chosen


def _split(
    kinds: Sequence[str],
    generate: Callable[[str, np.ndarray, np.random.Generator], tuple[list[Candidate], list[Group]]],
    rows: np.ndarray,
    per_kind: int,
    answer_names: Sequence[str],
    rng: np.random.Generator,
) -> TaskSplit:
    images, texts, answers, kind_of = [], [], [], []
    index = {a: i for i, a in enumerate(answer_names)}
    for kind in kinds:
        candidates, groups = generate(kind, rows, rng)
        for image_rows, text, answer, _ in _balanced(candidates, groups, per_kind, rng):
            if answer not in index:
                raise _Uncovered(f"does not cover the answer {answer!r} of {kind!r} questions")
            images.append(image_rows)
            texts.append(text)
            answers.append(index[answer])
            kind_of.append(kind)
    width = max((len(r) for r in images), default=1)
    return TaskSplit(
        images=np.asarray(images, dtype=np.int64).reshape(-1, width),
        texts=texts,
        answers=np.asarray(answers, dtype=np.int64),
        kinds=np.asarray(kind_of),
    )


def _chances(task: str, kinds: Sequence[str], train: TaskSplit, test: TaskSplit, generate) -> dict:
    """chance (uniform guess among the kind's answers), majority and text-only baselines on ``test``."""
    empty = np.zeros(0, dtype=np.int64)
    allowed = {
        kind: len({answer for _, answer in generate(kind, empty, np.random.default_rng(0))[1]})
        for kind in kinds
    }
    out: dict = {}
    if len(test):
        out["chance"] = float(np.mean([1.0 / allowed[k] for k in test.kinds]))
        majority = Counter(train.answers.tolist()).most_common(1)[0][0] if len(train) else -1
        out["majority"] = float(np.mean(test.answers == majority))
        by_text: dict[str, Counter] = {}
        for text, answer in zip(train.texts, train.answers.tolist(), strict=True):
            by_text.setdefault(text, Counter())[answer] += 1
        guesses = [by_text[t].most_common(1)[0][0] if t in by_text else majority for t in test.texts]
        out["text_only"] = float(np.mean(np.asarray(guesses) == test.answers))
    out["answers_per_kind"] = allowed
    out["train_size"], out["test_size"] = len(train), len(test)
    out["train_per_kind"] = dict(Counter(train.kinds.tolist()))
    out["test_per_kind"] = dict(Counter(test.kinds.tolist()))
    return out


def _check_common(
    name: str, kinds, allowed: Sequence[str], per_kind_train, per_kind_test, seed
) -> tuple[str, ...]:
    if kinds is None:
        kinds = tuple(allowed)
    if isinstance(kinds, str) or not isinstance(kinds, Sequence) or not kinds:
        raise ValueError(f"{name}_kinds must be a non-empty list among {', '.join(allowed)}; got {kinds!r}")
    unknown = [k for k in kinds if k not in allowed]
    if unknown:
        raise ValueError(f"{name}_kinds has unknown kind(s) {unknown}; allowed: {', '.join(allowed)}")
    for param, value in (("per_kind_train", per_kind_train), ("per_kind_test", per_kind_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
            raise ValueError(f"{param} must be an integer >= 2, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return tuple(kinds)


def _answer_names(name: str, answers, default: Sequence[str]) -> list[str]:
    if answers is None:
        return list(default)
    if isinstance(answers, str) or not isinstance(answers, Sequence) or not answers:
        raise ValueError(f"answers for {name} must be a non-empty list of strings, got {answers!r}")
    if len(set(answers)) != len(answers):
        raise ValueError(f"answers for {name} has duplicates: {list(answers)}")
    return [str(a) for a in answers]


def reasoning_task(
    name: str,
    facts: DigitFacts,
    train_rows,
    test_rows,
    kinds: Sequence[str] | None = None,
    per_kind_train: int | None = None,
    per_kind_test: int = 60,
    seed: int = 0,
    answers: Sequence[str] | None = None,
) -> ReasoningTask:
    """One generated task (``name`` in :data:`TASKS`) over the measured digits.

    Args:
        name: "vqa", "ve" or "nlvr".
        facts: the measured digits (:meth:`DigitFacts.measure`).
        train_rows, test_rows: data-set rows the two splits draw their images from.
        kinds: question kinds to generate (default all of the task's :data:`KINDS`).
        per_kind_train, per_kind_test: examples per kind and split (fewer when a pool runs short:
            the smallest answer pool sets the count of every answer). The train default is 200
            (198 for "ve": a multiple of its six form-answer groups).
        seed: the examples are a pure function of the inputs and the seed.
        answers: the answer vocabulary (default ``ANSWERS[name]``); it must cover every split.

    Raises:
        ValueError: an unknown task or kind, bad sizes, or ``answers`` missing an answer of a split.
    """
    if name not in TASKS:
        raise ValueError(f"name must be one of {', '.join(TASKS)}; got {name!r}")
    generate = _CANDIDATES[name]
    if per_kind_train is None:
        per_kind_train = 198 if name == "ve" else 200
    kinds = _check_common(name, kinds, KINDS[name], per_kind_train, per_kind_test, seed)
    answer_names = _answer_names(name, answers, ANSWERS[name])
    rng = np.random.default_rng([seed, TASKS.index(name)])
    splits = {}
    for split, rows, per_kind in (("train", train_rows, per_kind_train), ("test", test_rows, per_kind_test)):
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        try:
            splits[split] = _split(
                kinds, lambda k, r, g: generate(facts, k, r, g), rows, per_kind, answer_names, rng
            )
        except _Uncovered as err:
            raise ValueError(
                f"answers[{name!r}] {err} in the {split} split; answers[{name!r}] = {answer_names}"
            ) from None
    info = _chances(name, kinds, splits["train"], splits["test"], lambda k, r, g: generate(facts, k, r, g))
    info.update(kinds=list(kinds), seed=int(seed))
    return ReasoningTask(name, answer_names, splits["train"], splits["test"], info)


# ------------------------------------------------------------------------------------------------- VQA


def _plain(candidates: list[tuple[tuple[int, ...], str, str]], answers: Sequence[str]):
    """Candidates without strata, and one group per answer."""
    return [(*c, "") for c in candidates], [("", a) for a in answers]


def _vqa_candidates(facts: DigitFacts, kind: str, rows: np.ndarray, rng: np.random.Generator):
    label = facts.labels
    if kind == "digit":
        return _plain(
            [((r,), "which digit is this?", cap.DIGIT_WORDS[label[r]]) for r in rows], cap.DIGIT_WORDS
        )
    if kind in ("even", "odd"):
        want = 0 if kind == "even" else 1
        return _plain(
            [((r,), f"is it {kind}?", "yes" if label[r] % 2 == want else "no") for r in rows], ("yes", "no")
        )
    if kind == "larger":
        out = []
        for r in rows:
            k = int(rng.integers(1, 9))  # 1..8: both answers possible for most digits
            out.append(((r,), f"is it larger than {cap.DIGIT_WORDS[k]}?", "yes" if label[r] > k else "no"))
        return _plain(out, ("yes", "no"))
    measured = {
        "thickness": ("is the stroke thick or thin?", facts.thickness, {"thick": "thick", "thin": "thin"}),
        "slant": (
            "does it lean left or right?",
            facts.slant,
            {"left-leaning": "left", "right-leaning": "right"},
        ),
        "size": ("is it small or large?", facts.size, {"small": "small", "large": "large"}),
    }
    if kind not in measured:
        raise ValueError(f"unknown vqa kind {kind!r}")
    question, values, words = measured[kind]
    # only clear-cut images are asked: a middle bucket (medium-weight, upright, medium-sized) is neither
    return _plain(
        [((r,), question, words[values[r]]) for r in rows if values[r] in words], tuple(words.values())
    )


def vqa_task(facts: DigitFacts, train_rows, test_rows, **options) -> ReasoningTask:
    """Visual question answering over one image (kinds :data:`VQA_KINDS`, answers :data:`VQA_ANSWERS`).

    ``options`` as in :func:`reasoning_task`.
    """
    return reasoning_task("vqa", facts, train_rows, test_rows, **options)


# ------------------------------------------------------------------------------------------ entailment


def _claims(facts: DigitFacts, kind: str, r: int, rng: np.random.Generator) -> list[tuple[str, bool]]:
    """(claim, is it true of image r) for a kind; descriptor claims only where the image is clear-cut."""
    label = int(facts.labels[r])
    if kind == "digit":
        k = int(rng.integers(10))
        return [(f"the digit is {cap.fix_articles('a ' + cap.DIGIT_WORDS[k])}", label == k)]
    if kind == "parity":
        parity = ("even", "odd")[int(rng.integers(2))]
        return [(f"the digit is {parity}", (label % 2 == 0) == (parity == "even"))]
    if kind == "larger":
        k = int(rng.integers(1, 9))
        return [(f"the digit is larger than {cap.DIGIT_WORDS[k]}", label > k)]
    opposite = {
        "thickness": {"thick": "thin", "thin": "thick"},
        "slant": {"right-leaning": "left-leaning", "left-leaning": "right-leaning"},
        "size": {"large": "small", "small": "large"},
    }[kind]
    value = getattr(facts, kind)[r]
    if value not in opposite:
        return []  # a middle bucket: neither clearly true nor clearly false
    phrase = {
        "thick": "the strokes are thick",
        "thin": "the strokes are thin",
        "right-leaning": "the digit leans to the right",
        "left-leaning": "the digit leans to the left",
        "large": "the digit is large",
        "small": "the digit is small",
    }
    said = value if rng.random() < 0.5 else opposite[value]
    return [(phrase[said], said == value)]


#: How a claim X is stated, and the answer when X is true / false. U is a fact no image shows:
#: "X" follows X; "X and U" cannot be entailed (undetermined if X holds, contradicted if not); "X or U"
#: cannot be contradicted (entailed if X holds, undetermined if not).
VE_FORMS = {
    "plain": ("{claim}", "entailment", "contradiction"),
    "and": ("{claim} and {unknowable}", "neutral", "contradiction"),
    "or": ("{claim} or {unknowable}", "entailment", "neutral"),
}


def _ve_candidates(facts: DigitFacts, kind: str, rows: np.ndarray, rng: np.random.Generator):
    if kind not in VE_KINDS:
        raise ValueError(f"unknown ve kind {kind!r}")
    out: list[Candidate] = []
    for r in rows:
        for form, (template, if_true, if_false) in VE_FORMS.items():
            for claim, true in _claims(facts, kind, int(r), rng):
                unknowable = UNKNOWABLE[int(rng.integers(len(UNKNOWABLE)))]
                text = template.format(claim=claim, unknowable=unknowable)
                out.append(((int(r),), text, if_true if true else if_false, form))
    # each form has its two answers equally often, so each of the three answers is a third of the kind
    groups = [(form, answer) for form, (_, *answers) in VE_FORMS.items() for answer in answers]
    return out, groups


def entailment_task(facts: DigitFacts, train_rows, test_rows, **options) -> ReasoningTask:
    """Visual entailment, three-way (:data:`VE_ANSWERS`); ``options`` as in :func:`reasoning_task`."""
    return reasoning_task("ve", facts, train_rows, test_rows, **options)


# ---------------------------------------------------------------------------------------- two images

_STATEMENTS = {
    "larger": "the left digit is larger than the right",
    "smaller": "the left digit is smaller than the right",
    "both_odd": "both digits are odd",
    "both_even": "both digits are even",
    "same": "the two digits are the same",
    "thicker": "the left digit has thicker strokes than the right",
}


def _nlvr_truth(facts: DigitFacts, kind: str, left: int, right: int) -> bool | None:
    a, b = int(facts.labels[left]), int(facts.labels[right])
    if kind == "larger":
        return a > b
    if kind == "smaller":
        return a < b
    if kind == "both_odd":
        return a % 2 == 1 and b % 2 == 1
    if kind == "both_even":
        return a % 2 == 0 and b % 2 == 0
    if kind == "same":
        return a == b
    if kind == "thicker":
        diff = float(facts.stroke_width[left] - facts.stroke_width[right])
        return None if abs(diff) < THICKER_MARGIN else diff > 0  # too close to call: not asked
    raise ValueError(f"unknown nlvr kind {kind!r}")


def _nlvr_candidates(facts: DigitFacts, kind: str, rows: np.ndarray, rng: np.random.Generator):
    out = []
    if len(rows) < 2:
        return _plain(out, NLVR_ANSWERS)
    pairs = rng.choice(rows, size=(8 * len(rows), 2))
    if kind == "same":  # same-digit pairs are rare by chance: add a pool of them
        labels = facts.labels[rows]
        by_label = {d: rows[labels == d] for d in np.unique(labels)}
        extra = []
        for left in rng.choice(rows, size=4 * len(rows)):
            pool = by_label[facts.labels[left]]
            extra.append((left, pool[int(rng.integers(len(pool)))]))
        pairs = np.concatenate([pairs, np.asarray(extra, dtype=np.int64).reshape(-1, 2)])
    seen: set[tuple[int, int]] = set()
    for left, right in pairs.tolist():
        if left == right or (left, right) in seen:
            continue
        seen.add((left, right))
        truth = _nlvr_truth(facts, kind, left, right)
        if truth is not None:
            out.append(((left, right), _STATEMENTS[kind], "true" if truth else "false"))
    return _plain(out, NLVR_ANSWERS)


def nlvr_task(facts: DigitFacts, train_rows, test_rows, **options) -> ReasoningTask:
    """Two-image reasoning, true / false (:data:`NLVR_ANSWERS`); ``options`` as in :func:`reasoning_task`."""
    return reasoning_task("nlvr", facts, train_rows, test_rows, **options)


_CANDIDATES = {"vqa": _vqa_candidates, "ve": _ve_candidates, "nlvr": _nlvr_candidates}


def reasoning_tasks(
    images,
    labels,
    train_rows,
    test_rows,
    tasks: Sequence[str] = TASKS,
    thresholds: dict | None = None,
    per_kind_train: int = 200,
    per_kind_test: int = 60,
    seed: int = 0,
    answers: dict[str, Sequence[str]] | None = None,
) -> dict[str, ReasoningTask]:
    """Every requested task (:data:`TASKS`) over one set of digit images.

    ``thresholds``: descriptor thresholds (a caption data set's ``info["descriptor_thresholds"]``, so
    tasks and captions agree); ``answers``: per task, an answer vocabulary replacing the default.
    """
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or not tasks:
        raise ValueError(f"tasks must be a non-empty list among {', '.join(TASKS)}; got {tasks!r}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"tasks has unknown task(s) {unknown}; allowed: {', '.join(TASKS)}")
    answers = dict(answers or {})
    extra = sorted(set(answers) - set(tasks))
    if extra:
        raise ValueError(f"answers names task(s) {extra} that are not among tasks {list(tasks)}")
    facts = DigitFacts.measure(images, labels, thresholds)
    return {
        name: reasoning_task(
            name,
            facts,
            train_rows,
            test_rows,
            per_kind_train=per_kind_train,
            per_kind_test=per_kind_test,
            seed=seed,
            answers=answers.get(name),
        )
        for name in tasks
    }


__all__ = [
    "ANSWERS",
    "KINDS",
    "NLVR_ANSWERS",
    "NLVR_KINDS",
    "TASKS",
    "UNKNOWABLE",
    "VE_ANSWERS",
    "VE_KINDS",
    "VQA_ANSWERS",
    "VQA_KINDS",
    "DigitFacts",
    "ReasoningTask",
    "TaskSplit",
    "entailment_task",
    "nlvr_task",
    "reasoning_task",
    "reasoning_tasks",
    "vqa_task",
]
