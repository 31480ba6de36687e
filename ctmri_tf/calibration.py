"""Temperature scaling of the CT/MRI classifier (Guo et al. 2017, "On calibration of modern
neural networks").

After training, one scalar ``T > 0`` is fitted on the validation split so that
``softmax(logits / T)`` minimises the negative log-likelihood (nats per slice) of the true
labels; the argmax, hence the accuracy, is unchanged. ``T`` is written to
``<run_dir>/calibration.json`` (:data:`CALIBRATION_FILE`, next to ``config.json``) by
``python -m train.classifier``, and ``export.saved_model.export_run`` builds it into the
SavedModel (``export.signatures.Classifier`` divides the logits by ``T``), so ``classify``
returns calibrated probabilities to TF Serving clients and ``ctmri translate`` alike.

``{"temperature": T, "split": "validation", "slices": n, "nll_before": ..., "nll_after": ...}``
(NLL in nats per slice; ``T = 1`` with ``"split": null`` when there was no validation split).
``T`` is searched in [1, 50] (:data:`TEMPERATURE_BOUNDS`): softening only.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ctmri_tf.atomic import atomic_output
from ctmri_tf.errors import CtmriInputError

CALIBRATION_FILE = "calibration.json"
TEMPERATURE_BOUNDS = (1.0, 50.0)
"""The search interval of ``T``. It starts at 1: calibration may soften the classifier but never
sharpen it, because the validation split is the (easy, synthetic) training distribution: a
perfectly separated validation split drives the NLL-optimal ``T`` towards 0, i.e. certainty
that would then hold for inputs the classifier has never seen (the abstention of
``ctmri translate`` would never trigger)."""


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def negative_log_likelihood(logits, labels, temperature: float = 1.0) -> float:
    """Mean NLL (nats) of ``labels`` (N,) int under ``softmax(logits / temperature)``,
    ``logits`` (N, C)."""
    logits = np.asarray(logits, np.float64) / float(temperature)
    labels = np.asarray(labels, np.int64)
    return float(-np.mean(_log_softmax(logits)[np.arange(len(labels)), labels]))


def fit_temperature(logits, labels, *, bounds=TEMPERATURE_BOUNDS) -> float:
    """The ``T`` in ``bounds`` (:data:`TEMPERATURE_BOUNDS`) that minimises
    :func:`negative_log_likelihood`.

    A bounded scalar search (``scipy.optimize.minimize_scalar``) over ``log T`` (the NLL is
    smooth and unimodal in it for the usual logits).

    Args:
        logits: ``(N, C)`` float, the classifier's raw outputs.
        labels: ``(N,)`` int class ids.

    Raises:
        CtmriInputError: no example, or shapes that do not match.
    """
    from scipy.optimize import minimize_scalar

    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or not len(labels):
        raise CtmriInputError(None, f"temperature scaling needs (N, C) logits and (N,) labels "
                                    f"with N > 0, got {logits.shape} and {labels.shape}")
    low, high = (math.log(b) for b in bounds)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels,
                                                                   math.exp(log_t)),
                             bounds=(low, high), method="bounded",
                             options={"xatol": 1e-6})
    # the bounded search never returns a bound exactly: the optimum is often T = 1 (no softening)
    candidates = (math.exp(result.x), *bounds)
    return float(min(candidates, key=lambda t: negative_log_likelihood(logits, labels, t)))


def calibration_record(logits, labels, *, split: str | None) -> dict:
    """The :data:`CALIBRATION_FILE` content for the validation ``logits`` / ``labels``
    (``T = 1`` when ``split`` is None or there is no example)."""
    if split is None or not len(labels):
        return {"temperature": 1.0, "split": None, "slices": 0}
    temperature = fit_temperature(logits, labels)
    return {"temperature": temperature, "split": split, "slices": int(len(labels)),
            "nll_before": negative_log_likelihood(logits, labels),
            "nll_after": negative_log_likelihood(logits, labels, temperature)}


def write_calibration(run_dir: str | os.PathLike, record: dict, *, enabled: bool = True
                      ) -> Path:
    """Write ``record`` to ``<run_dir>/calibration.json`` (atomic; not when ``enabled`` is
    False, e.g. on a non-chief worker). Returns the path."""
    path = Path(run_dir) / CALIBRATION_FILE
    if enabled:
        with atomic_output(path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_temperature(run_dir: str | os.PathLike) -> float:
    """The fitted ``T`` of a classifier run folder (1.0 when it has no calibration.json).

    Raises:
        CtmriInputError: the file is not JSON or holds no positive ``temperature``.
    """
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return 1.0
    try:
        temperature = float(json.loads(path.read_text())["temperature"])
    except (ValueError, KeyError, TypeError) as err:
        raise CtmriInputError(path, f"holds no usable temperature ({err})") from None
    if not (temperature > 0 and math.isfinite(temperature)):
        raise CtmriInputError(path, f"temperature must be positive, got {temperature}")
    return temperature
