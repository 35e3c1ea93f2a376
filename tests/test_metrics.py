import numpy as np
import pytest
import torch

from mmlib import metrics


def test_classification_against_hand_computed_values():
    y = [0, 0, 0, 1, 1, 2]
    p = [0, 0, 1, 1, 2, 2]
    assert metrics.accuracy(y, p) == pytest.approx(4 / 6)
    # per-class recall: 2/3, 1/2, 1/1 -> UAR = 13/18
    assert metrics.uar(y, p) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # per-class F1: c0 P=1 R=2/3 -> 0.8; c1 P=1/2 R=1/2 -> 0.5; c2 P=1/2 R=1 -> 2/3
    f = [0.8, 0.5, 2 / 3]
    assert metrics.f1(y, p, "macro") == pytest.approx(np.mean(f))
    assert metrics.f1(y, p, "weighted") == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert metrics.f1(y, p, "micro") == pytest.approx(4 / 6)


def test_multilabel_f1_samples():
    y = np.array([[1, 0, 1], [0, 1, 0]])
    p = np.array([[1, 0, 0], [0, 1, 1]])
    # sample 1: P=1, R=1/2 -> 2/3; sample 2: P=1/2, R=1 -> 2/3
    assert metrics.f1(y, p, "samples") == pytest.approx(2 / 3)
    # micro: tp=2, fp=1, fn=1 -> 2/3
    assert metrics.f1(y, p, "micro") == pytest.approx(2 / 3)


def test_regression_metrics():
    y = torch.tensor([-2.6, -0.4, 0.0, 1.2, 2.9])
    p = torch.tensor([-3.4, 0.3, 0.2, 0.6, 2.2])
    assert metrics.mae(y, p) == pytest.approx(np.mean([0.8, 0.7, 0.2, 0.6, 0.7]))
    assert metrics.corr(y, p) == pytest.approx(np.corrcoef(y.numpy(), p.numpy())[0, 1], abs=1e-6)
    # signs (>= 0 positive): y - - + + +, p - + + + + -> 4 / 5
    assert metrics.acc2(y, p) == pytest.approx(4 / 5)
    # rounded and clipped: y -3 0 0 1 3, p -3 0 0 1 2 -> 4 / 5
    assert metrics.acc7(y, p) == pytest.approx(4 / 5)
    assert metrics.corr([1, 1, 1], [1, 2, 3]) == 0.0


def test_report_and_unknown_average():
    assert set(metrics.report("multiclass", [0, 1], [0, 1])) == {"accuracy", "f1_macro", "f1_weighted", "uar"}
    with pytest.raises(ValueError, match="unknown F1 average"):
        metrics.f1([0], [0], "bogus")
    with pytest.raises(ValueError, match="unknown task"):
        metrics.report("ranking", [0], [0])


def test_f1_of_the_sign_is_the_weighted_f1_of_acc2s_classes():
    import numpy as np

    from mmlib import metrics
    y, p = np.array([1.0, -1, 2, -2]), np.array([0.5, 0.2, 1, -1])
    # signs: true (+,-,+,-), predicted (+,+,+,-): class "+" P = 2/3, R = 1, F1 = 0.8; "-" P = 1, R = 1/2, F1 = 2/3
    assert metrics.f1_2(y, p) == __import__("pytest").approx((0.8 + 2 / 3) / 2)
    assert set(metrics.report("regression", y, p)) == {"mae", "corr", "acc2", "f1_2", "acc7"}


def test_majority_share_is_the_most_frequent_class_share():
    import torch
    from mmlib import metrics
    assert metrics.majority_share(torch.tensor([0, 0, 0, 1, 2])) == 0.6
