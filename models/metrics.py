"""Figures of a classifier over the telephone label set: recall, confusion, calibration."""

from __future__ import annotations

import numpy as np

from gateway.models.emotion import LABELS


def confusion(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Counts, rows true label, columns predicted label, both in LABELS order."""
    matrix = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def recalls(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Recall of each label that occurs in ``truth`` (NaN for one that does not)."""
    matrix = confusion(truth, predicted)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(matrix) / matrix.sum(axis=1)


def uar(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Unweighted average recall: the mean of the per-label recalls."""
    return float(np.nanmean(recalls(truth, predicted)))


def ece(truth: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top label, equal-width confidence bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total / truth.size)


def nll(truth: np.ndarray, probabilities: np.ndarray) -> float:
    picked = probabilities[np.arange(truth.size), truth]
    return float(-np.mean(np.log(np.maximum(picked, 1e-12))))


def tempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities as the same logits divided by ``temperature`` would give."""
    logits = np.log(np.maximum(probabilities, 1e-12)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood (a grid search)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 200))
    return float(min(grid, key=lambda t: nll(truth, tempered(probabilities, t))))
