"""Evaluating a model against another: the sentence set, accuracy reports and throughput.

An optimised version is judged against the version it came from on the same inputs: embeddings
by cosine similarity row by row (mean, 1st percentile, minimum), classifiers by how often their
predictions agree. Throughput is measured in process, alternating the two models so that
background load hits both alike.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np

_TOPICS: Final = (
    "The invoice for March was paid two weeks late.",
    "Our flight to Lisbon was delayed by three hours because of fog.",
    "How do I reset my password if I no longer have access to my email?",
    "The recipe calls for two cups of flour, a pinch of salt and warm water.",
    "Quarterly revenue grew by twelve percent, driven by subscriptions in Europe.",
    "The patient reported mild headaches and trouble sleeping after the new medication.",
    "A gradient boosting model overfits quickly when the learning rate is too high.",
    "Please cancel my order; the package never arrived.",
    "The museum opens at nine on weekdays and at ten on Sundays.",
    "Heavy rain is expected across the north of the country tonight.",
    "The striker scored twice in the second half to win the match.",
    "Replace the air filter every twelve months or fifteen thousand kilometres.",
    "She translated the novel from Portuguese into English over two years.",
    "The API returns a 429 status code when the client sends too many requests.",
    "Interest rates stayed unchanged for the third meeting in a row.",
    "The cat knocked a glass of water off the kitchen table.",
    "Customers can return unworn shoes within thirty days for a full refund.",
    "The bridge will be closed for repairs until the end of October.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "My laptop battery drains within an hour even when the screen is dimmed.",
    "The committee approved the new budget after a long debate.",
    "Add the onions and cook until they are soft and golden.",
    "The train from Berlin arrives at platform four.",
    "Vaccines train the immune system to recognise a pathogen.",
)
_SHORT: Final = (
    "thanks!",
    "where is my parcel",
    "great service",
    "refund please",
    "not working again",
    "hello",
    "best pizza in town",
    "cheap flights to Rome",
)
_PREFIXES: Final = ("", "Honestly, ", "Update: ", "As mentioned before, ", "In short, ")
_SUFFIXES: Final = (
    "",
    " Nobody has told us why.",
    " I would appreciate a quick answer, since this has happened several times already.",
    " See the attached notes for the full details and the timeline of events.",
)


def evaluation_texts(count: int = 256) -> list[str]:
    """A fixed, varied set of ``count`` English texts (1 to ~60 tokens), the same every call."""
    combos = itertools.product(_TOPICS, _PREFIXES, _SUFFIXES)
    texts = list(_SHORT)
    for topic, prefix, suffix in combos:
        texts.append(prefix + (topic[0].lower() + topic[1:] if prefix else topic) + suffix)
    # Interleave so any prefix of the list is a mix of lengths and topics.
    order = np.random.default_rng(6).permutation(len(texts))
    return [texts[i] for i in order[:count]]


def cosine_report(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Row-wise cosine similarity of two ``[rows, dim]`` arrays: mean, p1 and min."""
    a = reference.astype(np.float64)
    b = candidate.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = (a * b).sum(axis=1) / np.maximum(norms, 1e-12)
    return {
        "cosine_mean": round(float(cosine.mean()), 5),
        "cosine_p1": round(float(np.percentile(cosine, 1)), 5),
        "cosine_min": round(float(cosine.min()), 5),
    }


def agreement_report(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """How often two classifiers agree, per output: integer and text outputs compared element by
    element, float outputs of rank 2 by their arg-max (the predicted class), other float outputs
    by ``isclose`` at 1e-3. ``agreement`` is the lowest of them."""
    report: dict[str, float] = {}
    for name, want in reference.items():
        got = candidate.get(name)
        if got is None:
            continue
        want, got = np.asarray(want), np.asarray(got)
        if want.dtype.kind == "f" and want.ndim == 2:
            same = want.argmax(axis=1) == got.argmax(axis=1)
        elif want.dtype.kind == "f":
            same = np.isclose(want, got, rtol=1e-3, atol=1e-3)
        else:
            same = want == got
        report[f"agreement_{name}"] = round(float(np.mean(same)), 5)
    report["agreement"] = min(report.values(), default=1.0)
    return report


Predict = Callable[[Mapping[str, np.ndarray]], Any]


def throughput_ratio(
    baseline: Predict,
    candidate: Predict,
    batches: Sequence[Mapping[str, np.ndarray]],
    seconds: float,
) -> dict[str, float]:
    """Rows per second of each model over ``batches`` (first dimension = rows), run alternately
    for about ``seconds`` in all after one untimed pass each, and their ratio."""
    for batch in batches:
        baseline(batch)
        candidate(batch)
    elapsed = {"baseline": 0.0, "candidate": 0.0}
    rows = {"baseline": 0, "candidate": 0}
    deadline = time.monotonic() + seconds
    while True:
        for label, predict in (("baseline", baseline), ("candidate", candidate)):
            for batch in batches:
                start = time.perf_counter()
                predict(batch)
                elapsed[label] += time.perf_counter() - start
                rows[label] += len(next(iter(batch.values())))
        if time.monotonic() >= deadline:
            break
    base = rows["baseline"] / elapsed["baseline"]
    cand = rows["candidate"] / elapsed["candidate"]
    return {
        "baseline_rows_per_s": round(base, 1),
        "rows_per_s": round(cand, 1),
        "throughput_ratio": round(cand / base, 3),
    }
