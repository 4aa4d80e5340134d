"""The reference the emotion model must beat: eGeMAPS functionals and a linear SVM.

openSMILE's eGeMAPSv02 functionals (88 per segment; Eyben et al. 2016, IEEE Trans. Affective
Computing 7(2)) of the same 16 kHz segments the model is given, standardised, then a linear
SVM with balanced class weights whose cost is chosen on the validation speakers.
Development only: openSMILE's licence forbids commercial use, so nothing here ships and
``gateway`` never imports it. ``models/train_emotion.py`` runs it on the same split and audio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import opensmile
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from gateway.models.logmel import RATE
from models.metrics import uar


def extractor() -> opensmile.Smile:
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )


def functionals(smile: opensmile.Smile, x: np.ndarray) -> np.ndarray:
    """The 88 eGeMAPS functionals of one segment at the analysis rate."""
    return smile.process_signal(x, RATE).to_numpy(dtype=np.float32)[0]


def fit(
    train: np.ndarray,
    train_labels: np.ndarray,
    validation: np.ndarray,
    validation_labels: np.ndarray,
    costs: Sequence[float],
    seed: int,
) -> tuple[Pipeline, float]:
    """The SVM, trained on ``train``, whose cost gives the best validation UAR, and that
    cost."""

    def svm(cost: float) -> Pipeline:
        model = LinearSVC(C=cost, class_weight="balanced", max_iter=20000, random_state=seed)
        return make_pipeline(StandardScaler(), model).fit(train, train_labels)

    best = max(costs, key=lambda c: uar(validation_labels, svm(c).predict(validation)))
    return svm(best), float(best)
