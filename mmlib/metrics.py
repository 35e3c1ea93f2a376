"""Metrics the five papers report, as thin wrappers over scikit-learn.

Classification: accuracy, F1 (macro / micro / weighted / samples), unweighted average
recall (UAR, = balanced accuracy). Regression on sentiment scores in [-3, 3] (CMU-MOSI
style): MAE, Pearson correlation, Acc-2 (sign, non-negative vs negative) and Acc-7 (scores
rounded and clipped to the 7 integers -3..3).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr
from sklearn import metrics as skm


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def majority_share(y) -> float:
    """The accuracy of always predicting the most frequent class (a table's floor)."""
    y = _np(y).astype(int)
    return float(np.bincount(y).max() / len(y))


def accuracy(y_true, y_pred) -> float:
    return float(skm.accuracy_score(_np(y_true), _np(y_pred)))


def f1(y_true, y_pred, average: str = "macro") -> float:
    """``average`` in {"macro", "micro", "weighted", "samples"} ("samples" is for multilabel)."""
    if average not in {"macro", "micro", "weighted", "samples"}:
        raise ValueError(f"unknown F1 average {average!r}")
    return float(skm.f1_score(_np(y_true), _np(y_pred), average=average, zero_division=0))


def uar(y_true, y_pred) -> float:
    """Unweighted average recall: the mean of per-class recalls."""
    return float(skm.recall_score(_np(y_true), _np(y_pred), average="macro", zero_division=0))


def mae(y_true, y_pred) -> float:
    return float(skm.mean_absolute_error(_np(y_true), _np(y_pred)))


def corr(y_true, y_pred) -> float:
    """Pearson correlation (0 when a side is constant, where it is undefined)."""
    a, b = _np(y_true).astype(float).ravel(), _np(y_pred).astype(float).ravel()
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(pearsonr(a, b)[0])


def acc2(y_true, y_pred) -> float:
    """Binary accuracy of the sign: positive (>= 0) vs negative (< 0)."""
    return accuracy(_np(y_true) >= 0, _np(y_pred) >= 0)


def acc7(y_true, y_pred) -> float:
    """7-class accuracy: scores rounded to the nearest integer and clipped to [-3, 3]."""
    t = np.clip(np.round(_np(y_true)), -3, 3)
    p = np.clip(np.round(_np(y_pred)), -3, 3)
    return accuracy(t, p)


def classification_report(y_true, y_pred) -> dict[str, float]:
    return {"accuracy": accuracy(y_true, y_pred), "f1_macro": f1(y_true, y_pred, "macro"),
            "f1_weighted": f1(y_true, y_pred, "weighted"), "uar": uar(y_true, y_pred)}


def multilabel_report(y_true, y_pred) -> dict[str, float]:
    return {"f1_samples": f1(y_true, y_pred, "samples"), "f1_micro": f1(y_true, y_pred, "micro"),
            "f1_macro": f1(y_true, y_pred, "macro"), "f1_weighted": f1(y_true, y_pred, "weighted")}


def f1_2(y_true, y_pred) -> float:
    """Weighted F1 of the sign (>= 0 against < 0): Self-MM's and MMSA's "F1-Score"."""
    return f1(_np(y_true) >= 0, _np(y_pred) >= 0, "weighted")


def regression_report(y_true, y_pred) -> dict[str, float]:
    return {"mae": mae(y_true, y_pred), "corr": corr(y_true, y_pred),
            "acc2": acc2(y_true, y_pred), "f1_2": f1_2(y_true, y_pred), "acc7": acc7(y_true, y_pred)}


def report(task: str, y_true, y_pred) -> dict[str, float]:
    """All metrics for a task type of :class:`mmlib.data.MultimodalDataset`."""
    if task == "multiclass":
        return classification_report(y_true, y_pred)
    if task == "multilabel":
        return multilabel_report(y_true, y_pred)
    if task == "regression":
        return regression_report(y_true, y_pred)
    raise ValueError(f"unknown task {task!r}")
