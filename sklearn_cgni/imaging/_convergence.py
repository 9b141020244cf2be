"""The stage-1 training recipe: one skorch callback that decides the learning rate and when to stop.

Every image CNN of the package (:class:`BrainAgeCNNTransformer`, :class:`ImagingCNNClassifier`,
:class:`BrainGenotypeScorer`) trains under :class:`ConvergenceControl`. It replaces skorch's
``EarlyStopping`` + ``LRScheduler("ReduceLROnPlateau")`` pair, whose combination ended runs on
the mean predictor's plateau: with a patience of 10 epochs and the learning rate halved after 5
epochs without improvement, a network that needs a dozen epochs to leave the plateau had its
learning rate cut to an eighth and was stopped before it left (a brain-age MAE of 5.2 years
where other runs reach 2.3; ``benchmarks/results/stage1_reliability.md``). Per epoch it does, in
this order:

1. **Warm-up.** The learning rate rises linearly to ``lr`` over the first ``warmup_epochs``.
2. **Plateau schedule with a floor, not before ``min_epochs``.** Once ``min_epochs`` have run,
   the learning rate is halved after ``max(1, patience // 2)`` epochs without improvement, and
   never below ``lr * min_lr_fraction``.
3. **Restart from a fresh initialisation.** When the estimator knows the metric of the constant
   predictor on the validation split (the mean age, the class priors) and after ``min_epochs``
   the best epoch is not ``stall_margin`` better than it, training stops and asks for a restart
   (:attr:`restart_requested_`); the estimator re-initialises with a new seed derived from its
   own, at most ``max_restarts`` times.
4. **Early stopping, not before ``min_epochs``.** ``patience`` epochs without improvement end
   training (with ``lr_schedule="plateau_floor"``, only once the learning rate is at its floor);
   the weights of the best epoch are restored at the end of training.
5. **A budget that grows while the best epoch is at its end.** At epoch ``budget`` (first
   ``max_epochs``) training ends, unless the best epoch lies in the last 10 % of the budget: then
   the budget grows by half of ``max_epochs``, up to ``max_epochs * budget_growth``.

Without early stopping (``early_stopping=False``) it trains exactly ``max_epochs`` epochs and
keeps the last, with warm-up and the schedule as above.

Under ``torchrun`` (data-parallel training, :mod:`sklearn_cgni.utils._distributed`) every process
decides on rank 0's monitored score, broadcast at the end of each epoch: the decisions are a
function of the scores alone, so all processes warm up, halve the learning rate, restart and stop
at the same epoch even where their own validation passes differ in the last bits (GPU kernels).

This module imports torch and skorch only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skorch.callbacks import Callback

from ..utils._distributed import broadcast_object
from ..utils._skorch import StopTraining

__all__ = ["ConvergenceControl"]


class ConvergenceControl(Callback):
    """Warm-up, a floored plateau schedule, restarts, early stopping and a growing budget.

    Parameters
    ----------
    monitor : str or None
        History key watched (e.g. ``"valid_loss"``, ``"valid_mae"``); None: only the warm-up
        (no validation split).
    lower_is_better : bool
    max_epochs : int
        The epoch budget; the net's own ``max_epochs`` must be at least
        ``ceil(max_epochs * budget_growth)`` (:meth:`epoch_cap`).
    early_stopping : bool, default=True
    patience : int, default=10
    min_epochs : int, default=0
        Neither early stopping nor the schedule acts before this many epochs.
    warmup_epochs : int, default=0
    lr_schedule : {"plateau", "plateau_floor", "none"}, default="plateau"
        ``"plateau_floor"``: the plateau schedule, and early stopping only once it has brought
        the learning rate down to its floor (``lr * min_lr_fraction``): a run whose validation
        metric stalls gets every halving before it is stopped.
    min_lr_fraction : float, default=1/16
    budget_growth : float, default=1.0
        ``1``: the budget is fixed.
    baseline : callable or None, default=None
        ``baseline(y_valid)``: the monitored metric of the constant predictor on the validation
        targets (as the net receives them), computed once in the first epoch. None: no restart.
    stall_margin : float, default=0.1
        Relative improvement over ``baseline`` that counts as having left the plateau.
    restart : bool, default=False
        Whether a stalled run may ask for a restart.

    Attributes
    ----------
    best_epoch_, best_score_ : int, float
    baseline_ : float or None
        ``baseline`` of this run's validation targets.
    budget_ : int
        The final budget.
    stop_reason_ : {"early_stopping", "budget", "stalled", None}
    restart_requested_ : bool
    """

    def __init__(self, monitor, lower_is_better, max_epochs, *, early_stopping=True, patience=10,
                 min_epochs=0, warmup_epochs=0, lr_schedule="plateau", min_lr_fraction=1 / 16,
                 budget_growth=1.0, baseline=None, stall_margin=0.1, restart=False):
        self.monitor = monitor
        self.lower_is_better = lower_is_better
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.patience = patience
        self.min_epochs = min_epochs
        self.warmup_epochs = warmup_epochs
        self.lr_schedule = lr_schedule
        self.min_lr_fraction = min_lr_fraction
        self.budget_growth = budget_growth
        self.baseline = baseline
        self.stall_margin = stall_margin
        self.restart = restart

    def epoch_cap(self):
        """The most epochs a run can take: the budget grown to its limit."""
        if not self.early_stopping:
            return int(self.max_epochs)
        return int(math.ceil(self.max_epochs * self.budget_growth))

    def initialize(self):
        self.best_epoch_ = 0
        self.best_score_ = None
        self.budget_ = int(self.max_epochs)
        self.stop_reason_ = None
        self.restart_requested_ = False
        self._misses = 0
        self._plateau = 0
        self._lr_scale = 1.0
        self._factor = 1.0  # the factor now applied to the optimizer's learning rate
        self._best_state = None
        self._y_valid = []
        self.baseline_ = None
        return self

    def on_train_begin(self, net, **kwargs):
        self.initialize()

    def on_epoch_begin(self, net, **kwargs):
        # the factor is applied relative to the last one, so a user's own LR scheduler composes with it
        epoch = len(net.history)  # skorch appended this epoch's row already
        warm = min(1.0, epoch / self.warmup_epochs) if self.warmup_epochs else 1.0
        factor = self._lr_scale * warm
        for group in net.optimizer_.param_groups:
            group["lr"] *= factor / self._factor
        self._factor = factor
        net.history.record("event_lr", net.optimizer_.param_groups[0]["lr"])

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if not training and self.baseline is not None and self.monitor and len(net.history) == 1:
            self._y_valid.append(batch[1].detach().cpu().numpy())

    def _better(self, a, b):
        return a < b if self.lower_is_better else a > b

    def _stalled(self):
        if self.baseline_ is None or self.best_score_ is None:
            return False
        margin = self.stall_margin * abs(self.baseline_)
        target = self.baseline_ - margin if self.lower_is_better else self.baseline_ + margin
        return not self._better(self.best_score_, target)

    def on_epoch_end(self, net, **kwargs):
        if self.monitor is None:
            return
        epoch = len(net.history)
        if self._y_valid:
            self.baseline_ = float(self.baseline(np.concatenate(self._y_valid)))
            self._y_valid = []
        # under torchrun every process takes rank 0's decisions: they all see rank 0's score
        score = float(broadcast_object(float(net.history[-1, self.monitor])))
        if self.best_score_ is None or self._better(score, self.best_score_):
            self.best_score_, self.best_epoch_ = score, epoch
            self._misses = self._plateau = 0
            if self.early_stopping:
                self._best_state = {k: v.detach().clone() for k, v in net.module_.state_dict().items()}
        else:
            self._misses += 1
            self._plateau += 1
        settled = epoch >= max(self.min_epochs, self.warmup_epochs)
        if self.lr_schedule in ("plateau", "plateau_floor") and settled and self._plateau >= max(1, self.patience // 2):
            self._lr_scale = max(self._lr_scale / 2, self.min_lr_fraction)
            self._plateau = 0
        if not self.early_stopping:
            return
        if self.restart and epoch == max(self.min_epochs, 1) and self._stalled():
            self.restart_requested_ = True
            self._stop("stalled")
        at_floor = self.lr_schedule != "plateau_floor" or self._lr_scale <= self.min_lr_fraction
        if settled and self._misses >= self.patience and at_floor:
            self._stop("early_stopping")
        if epoch >= self.budget_:
            tail = max(1, math.ceil(0.1 * self.budget_))
            cap = self.epoch_cap()
            if self.best_epoch_ > self.budget_ - tail and self.budget_ < cap:
                self.budget_ = min(cap, self.budget_ + max(1, math.ceil(self.max_epochs / 2)))
            else:
                self._stop("budget")

    def _stop(self, reason):
        self.stop_reason_ = reason
        raise StopTraining(reason)

    def on_train_end(self, net, **kwargs):
        if self._best_state is not None:
            net.module_.load_state_dict(self._best_state)
        self._best_state = None  # a fitted net does not keep a second copy of its weights

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_best_state"] = None
        return state


def constant_predictor_loss(codes, weight=None):
    """Cross-entropy of the best constant prediction on integer ``codes`` (weighted as in the loss).

    With class weights ``w`` (torch's ``CrossEntropyLoss(weight=w)``, mean reduction), the best
    constant probabilities are proportional to ``w_k n_k``.

    Examples
    --------
    >>> round(constant_predictor_loss([0, 0, 1, 1]), 4)  # log 2
    0.6931
    """
    codes = np.asarray(codes, dtype=np.int64)
    counts = np.bincount(codes).astype(float)
    w = np.ones_like(counts) if weight is None else np.asarray(
        weight.cpu().numpy() if isinstance(weight, torch.Tensor) else weight, dtype=float)[:len(counts)]
    mass = w * counts
    p = mass / mass.sum()
    present = mass > 0
    return float(-(mass[present] * np.log(p[present])).sum() / mass.sum())
