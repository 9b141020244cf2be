"""The stage-1 training recipe (ConvergenceControl), replayed on given validation curves."""

import numpy as np
import pytest
import torch
from skorch.history import History

from sklearn_cgni.imaging._convergence import ConvergenceControl, constant_predictor_loss
from sklearn_cgni.utils._skorch import StopTraining


class _Net:
    def __init__(self, lr=1.0):
        self.module_ = torch.nn.Linear(1, 1)
        self.optimizer_ = torch.optim.SGD(self.module_.parameters(), lr=lr)
        self.history = History()


def _replay(control, curve, y_valid=(0.0, 1.0), lower=True):
    """Run ``control`` over the validation ``curve``; the weights of epoch e are all e."""
    net = _Net()
    control.on_train_begin(net)
    lrs = []
    for epoch, value in enumerate(curve, start=1):
        net.history.new_epoch()
        net.history.record("epoch", epoch)
        control.on_epoch_begin(net)
        lrs.append(net.optimizer_.param_groups[0]["lr"])
        control.on_batch_end(net, batch=(None, torch.tensor(y_valid)), training=False)
        with torch.no_grad():
            for p in net.module_.parameters():
                p.fill_(epoch)
        net.history.record(control.monitor, value)
        try:
            control.on_epoch_end(net)
        except StopTraining:
            break
    control.on_train_end(net)
    return len(net.history), lrs, float(net.module_.weight.detach())


def test_warmup_rises_linearly_to_the_learning_rate():
    c = ConvergenceControl("valid_loss", True, 10, early_stopping=False, warmup_epochs=4)
    _, lrs, _ = _replay(c, np.linspace(1, 0, 10))
    assert lrs[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_no_reduction_or_stop_before_min_epochs_on_a_plateau():
    # a flat start (the constant predictor's plateau), left at epoch 12
    curve = [1.0] * 11 + list(np.linspace(0.9, 0.1, 20)) + [0.2] * 10
    c = ConvergenceControl("valid_loss", True, 40, patience=4, min_epochs=12)
    n, lrs, _ = _replay(c, curve)
    assert lrs[:12] == [1.0] * 12  # the plateau did not cut the learning rate
    assert n == 35 and c.best_epoch_ == 31 and c.stop_reason_ == "early_stopping"
    # the old recipe's behaviour (min_epochs=0): halved at epoch 3 and stopped at epoch 5
    old = ConvergenceControl("valid_loss", True, 40, patience=4, min_epochs=0)
    n_old, lrs_old, _ = _replay(old, curve)
    assert n_old == 5 and old.stop_reason_ == "early_stopping" and lrs_old[3] == 0.5


def test_the_schedule_has_a_floor():
    c = ConvergenceControl("valid_loss", True, 60, early_stopping=False, patience=2,
                           min_lr_fraction=1 / 16)
    _, lrs, _ = _replay(c, [1.0] + [2.0] * 59)
    assert lrs[:6] == [1.0, 1.0, 0.5, 0.25, 0.125, 1 / 16] and min(lrs) == lrs[-1] == 1 / 16


def test_plateau_floor_stops_only_once_the_learning_rate_is_at_its_floor():
    # best at epoch 3, then no improvement: "plateau" stops after `patience` misses, at lr / 2;
    # "plateau_floor" halves every patience // 2 misses and stops once at lr / 16 with patience misses
    curve = [1.0, 0.9, 0.8] + [0.85] * 40
    plain = ConvergenceControl("valid_loss", True, 60, patience=4, min_lr_fraction=1 / 16)
    n, lrs, w = _replay(plain, curve)
    assert n == 7 and min(lrs) == 0.5 and w == 3
    floor = ConvergenceControl("valid_loss", True, 60, patience=4, min_lr_fraction=1 / 16,
                               lr_schedule="plateau_floor")
    n, lrs, w = _replay(floor, curve)
    # halved after misses 2, 4, 6, 8 (epochs 5, 7, 9, 11): at the floor from epoch 12, stopped at its end
    assert n == 11 and lrs[-1] == 1 / 8 and floor.stop_reason_ == "early_stopping" and w == 3
    assert floor._lr_scale == 1 / 16
    # an improvement on the way down resets the count; the learning rate stays where it is
    better = [1.0, 0.9, 0.8, 0.85, 0.85, 0.85, 0.7] + [0.75] * 40
    again = ConvergenceControl("valid_loss", True, 60, patience=4, lr_schedule="plateau_floor")
    n, lrs, w = _replay(again, better)
    # after it: halved at misses 2, 4, 6 (epochs 9, 11, 13), the floor reached with 6 >= 4 misses: stop at 13
    assert w == 7 and lrs[7] == 0.5 and n == 13


def test_budget_grows_while_the_best_epoch_is_at_its_end():
    improving_to_12 = list(np.linspace(1, 0.5, 12)) + [0.6] * 20
    c = ConvergenceControl("valid_loss", True, 10, patience=10, budget_growth=2.0)
    n, _, w = _replay(c, improving_to_12)
    # at epoch 10 the best (10) is in the last 10 %: the budget grows to 15; at 15 the best (12) is not
    assert n == 15 and c.budget_ == 15 and c.stop_reason_ == "budget" and c.best_epoch_ == 12
    assert w == 12  # the best epoch's weights are restored
    always = ConvergenceControl("valid_loss", True, 10, patience=10, budget_growth=2.0)
    n, _, _ = _replay(always, np.linspace(1, 0, 40))
    assert n == 20 and always.budget_ == 20  # never beyond max_epochs * budget_growth
    fixed = ConvergenceControl("valid_loss", True, 10, patience=10, budget_growth=1.0)
    assert _replay(fixed, np.linspace(1, 0, 40))[0] == 10


def test_early_stopping_restores_the_best_epoch():
    c = ConvergenceControl("valid_loss", True, 50, patience=3, min_epochs=2)
    n, _, w = _replay(c, [1.0, 0.5, 0.4, 0.6, 0.7, 0.8, 0.9])
    assert n == 6 and c.best_epoch_ == 3 and w == 3 and c.stop_reason_ == "early_stopping"


def test_a_run_that_never_leaves_the_constant_predictor_asks_for_a_restart():
    def mean_abs(y):
        return float(np.mean(np.abs(y)))  # 1.0 for y = (-1, 1)

    stalled = ConvergenceControl("valid_loss", True, 50, patience=50, min_epochs=5, baseline=mean_abs,
                                 restart=True)
    n, _, _ = _replay(stalled, [1.0, 0.97, 0.95, 0.93, 0.92, 0.5], y_valid=(-1.0, 1.0))
    assert stalled.baseline_ == 1.0
    assert n == 5 and stalled.restart_requested_ and stalled.stop_reason_ == "stalled"
    learning = ConvergenceControl("valid_loss", True, 8, patience=50, min_epochs=5, baseline=mean_abs,
                                  restart=True)
    _replay(learning, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.39], y_valid=(-1.0, 1.0))
    assert not learning.restart_requested_
    # higher is better (balanced accuracy against 1 / n_classes)
    bacc = ConvergenceControl("valid_bacc", False, 50, patience=50, min_epochs=3, baseline=lambda y: 0.5,
                              restart=True)
    n, _, _ = _replay(bacc, [0.5, 0.52, 0.54, 0.9])
    assert bacc.restart_requested_ and n == 3


def test_constant_predictor_loss():
    assert constant_predictor_loss([0, 0, 0, 1]) == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    # balanced class weights make the best constant prediction uniform: log 2
    assert constant_predictor_loss([0, 0, 0, 1], weight=[2 / 3, 2.0]) == pytest.approx(np.log(2))
