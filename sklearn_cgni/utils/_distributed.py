"""Data-parallel training of one CNN over several processes (``torchrun``, ``accelerate launch``).

Under ``torchrun --nproc_per_node N`` (or ``accelerate launch``, which sets the same variables)
every process reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` from its environment;
:func:`init_distributed` (called by the image CNNs' ``fit`` and by ``sklearn-cgni run``) starts
``torch.distributed`` once: ``nccl`` with the process's GPU ``cuda:LOCAL_RANK`` when CUDA is
available, ``gloo`` on the CPU. Without those variables nothing here does anything: a single
process trains exactly as before.

When a process group of more than one process is up, every image CNN of the package
(:class:`~sklearn_cgni.imaging.BrainAgeCNNTransformer`,
:class:`~sklearn_cgni.imaging.ImagingCNNClassifier`,
:class:`~sklearn_cgni.imaging.BrainGenotypeScorer`) trains data-parallel with the engines
torch ships:

* :class:`GeneratorDistributedSampler`, a ``DistributedSampler`` whose epoch order is drawn from
  the fit's own generator exactly as a single process draws it; process ``r`` takes the
  positions ``r, r + N, r + 2N, ...`` of that order, so the ``k``-th batches of the ``N``
  processes together are the ``k``-th batch of one process with an ``N`` times larger batch;
* ``DistributedDataParallel``, which averages the gradients over the processes;
* BatchNorm statistics of the global batch: ``torch.nn.SyncBatchNorm`` on GPUs, and on the
  CPU (where torch's SyncBatchNorm refuses to run) :class:`DistributedBatchNorm`, the same
  statistics through the autograd-aware ``torch.distributed.nn.functional.all_reduce``; the
  layers are swapped in for training only (and for the final recalibration of the running
  statistics, each process on its share) and the fitted network has plain BatchNorm again;
* the validation metric that early stopping, the learning-rate schedule, restarts and the epoch
  budget watch is rank 0's, broadcast (:func:`broadcast_object`), so every process takes the
  same decision at the same epoch. The validation split is the same on every process (it comes
  from the fit's seed) and each process validates on all of it.

``batch_size`` is **per process**: ``N`` processes at ``batch_size=b`` train as one process at
``N * b`` (the loss is a mean over the batch and DDP averages the gradients), up to float
rounding, when the number of training images is a multiple of ``N * b``; otherwise the
sampler repeats a few images to give every process as many batches. Three things differ from
one process by design: random draws inside the network (dropout masks, random shifts) come
from a stream per process (:func:`rank_seed`); a class-weighted loss is the weighted mean of
each process's part, averaged; ``net_.history`` holds each process's own training loss.

:func:`local_training` switches data parallelism off in a block: ``sklearn-cgni run`` uses it
for the stages that only rank 0 computes (a fit there trains on rank 0 alone).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
import warnings

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, RandomSampler

__all__ = ["DistributedBatchNorm", "GeneratorDistributedSampler", "barrier", "broadcast_object",
           "convert_batchnorm", "data_parallel", "global_batchnorm", "init_distributed", "is_main_process",
           "local_training", "rank", "rank_seed", "restore_batchnorm", "shutdown_distributed", "world_size"]

#: how long a process waits for the others (rank 0 may compute a long single-process stage meanwhile)
BARRIER_TIMEOUT = datetime.timedelta(hours=48)

_state = threading.local()
_control_group = None


def _env_world():
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer (set by torchrun); got {os.environ['WORLD_SIZE']!r}.")


def init_distributed(backend=None, device="auto"):
    """Start ``torch.distributed`` from torchrun's environment once; return ``(rank, world_size)``.

    Does nothing (and returns ``(0, 1)``) when ``WORLD_SIZE`` is unset or 1. Otherwise the
    default process group is initialized from ``MASTER_ADDR``/``MASTER_PORT`` (the ``env://``
    method), with ``nccl`` and the device ``cuda:LOCAL_RANK`` when CUDA is available and
    ``device`` is not the CPU, ``gloo`` otherwise, and a second ``gloo`` group carries the small
    control messages (barriers, broadcast decisions) with a long timeout. Calling it again is
    harmless. The image CNN estimators call it at the start of ``fit``, and so does
    ``sklearn-cgni run``.

    Parameters
    ----------
    backend : {"gloo", "nccl"} or None, default=None
        None: as described above.
    device : str, default="auto"
        The device the networks will train on (``"cpu"`` selects ``gloo``).

    Returns
    -------
    rank, world_size : int
    """
    global _control_group
    if _env_world() <= 1 or not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not: start the processes with torchrun (or accelerate "
                "launch), which sets them all, or unset WORLD_SIZE to run in one process.")
        if backend is None:
            on_cpu = str(device).startswith("cpu")
            backend = "nccl" if torch.cuda.is_available() and not on_cpu else "gloo"
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"init_distributed: backend must be 'gloo' or 'nccl'; got {backend!r}.")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=BARRIER_TIMEOUT)
    if _control_group is None:
        _control_group = (dist.group.WORLD if dist.get_backend() == "gloo"
                          else dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT))
    return dist.get_rank(), dist.get_world_size()


def world_size():
    """The number of processes of the initialized process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process():
    """Whether this process is rank 0 (the one that writes files and logs)."""
    return rank() == 0


def data_parallel():
    """Whether a CNN fit here trains data-parallel: a process group of >1 and not in :func:`local_training`."""
    return world_size() > 1 and not getattr(_state, "local", False)


@contextlib.contextmanager
def local_training():
    """Within this block, CNN fits train on this process alone even under torchrun."""
    previous = getattr(_state, "local", False)
    _state.local = True
    try:
        yield
    finally:
        _state.local = previous


def _group():

    return _control_group if _control_group is not None else dist.group.WORLD


def barrier():
    """Wait until every process arrives (no-op in a single process)."""
    if world_size() > 1:
        dist.barrier(group=_group())


def shutdown_distributed(wait=True):
    """End the process group that :func:`init_distributed` started (nothing without one).

    With ``wait`` every process first waits for the others, so that no process leaves while
    another still talks to it (rank 0 writes the report after the last stage). A process that
    left its interpreter with the group still up could abort in gloo's threads ("terminate
    called without an active exception", SIGABRT), and torchrun then stopped the others. After
    an error, call it with ``wait=False``: the other processes may never arrive.
    """
    global _control_group
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if wait and dist.get_world_size() > 1:
            dist.barrier(group=_group())
    finally:
        if _control_group is not None and _control_group is not dist.group.WORLD:
            dist.destroy_process_group(_control_group)
        _control_group = None
        dist.destroy_process_group()


def broadcast_object(obj, src=0):
    """``obj`` of rank ``src``, on every process (picklable; returned unchanged in a single process)."""
    if world_size() <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_group())
    return box[0]


def rank_seed(seed):
    """The seed of this process's random stream inside the network: ``seed`` itself on rank 0."""
    r = rank() if data_parallel() else 0
    if r == 0:
        return seed
    return int(np.random.SeedSequence([int(seed), r]).generate_state(1)[0])


def _all_reduce(tensor):
    """Sum over the processes, differentiable (the gradient is summed over the processes too)."""
    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # deprecated in favor of functional collectives, which have no autograd
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(tensor)


class DistributedBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch on the CPU (``gloo``), where torch's SyncBatchNorm refuses to run.

    In training mode the batch mean and variance are those of every process's part of the
    batch together, computed with two differentiable all-reduces (the sum, then the sum of
    squared deviations), so the gradients through them are exact; the running statistics are
    updated as BatchNorm updates them (``momentum=None``: cumulative average). In eval mode, or
    without a process group of more than one process, it is a plain BatchNorm. Made by
    :func:`convert_batchnorm` (which picks ``torch.nn.SyncBatchNorm`` on GPUs).
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"DistributedBatchNorm expects input of 2 or more dimensions; got {input.dim()}.")

    def forward(self, input):
        sync = (self.training and self.track_running_stats and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1)
        if not sync:
            return super().forward(input)
        self._check_input_dim(input)
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = input.new_full((1,), input.numel() // input.size(1))
        packed = _all_reduce(torch.cat([input.sum(dims), count]))
        total = packed[-1]
        mean = packed[:-1] / total
        centered = input - mean.view(shape)
        var = _all_reduce((centered * centered).sum(dims)) / total
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        with torch.no_grad():
            n = float(total)
            self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            self.running_var.mul_(1 - factor).add_(var.detach() * (n / max(n - 1.0, 1.0)), alpha=factor)
        return out


_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def convert_batchnorm(module, device="cpu"):
    """Replace every BatchNorm of ``module`` (in place) by one over the global batch.

    ``torch.nn.SyncBatchNorm`` on a GPU, :class:`DistributedBatchNorm` on the CPU. The new layers
    share the parameters and buffers of the old ones (an optimizer built on
    ``module.parameters()`` keeps working) and keep their training mode. Returns the list of
    ``(parent, name, original)`` that :func:`restore_batchnorm` puts back.
    """
    cls = torch.nn.SyncBatchNorm if torch.device(device).type == "cuda" else DistributedBatchNorm
    swapped = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, torch.nn.modules.batchnorm._BatchNorm)
                    and not isinstance(child, (DistributedBatchNorm, torch.nn.SyncBatchNorm))):
                new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
                _share_batchnorm_state(child, new)
                setattr(parent, name, new)
                swapped.append((parent, name, child))
    return swapped


def restore_batchnorm(swapped):
    """Undo :func:`convert_batchnorm`: the original layers come back with the trained values."""
    for parent, name, original in reversed(swapped):
        _share_batchnorm_state(getattr(parent, name), original)
        setattr(parent, name, original)


def _share_batchnorm_state(source, target):
    """``target`` takes ``source``'s parameters and running statistics (the same tensors) and mode."""
    if source.affine:
        target.weight, target.bias = source.weight, source.bias
    if source.track_running_stats:
        for buf in _BN_BUFFERS:
            setattr(target, buf, getattr(source, buf))
    target.train(source.training)


@contextlib.contextmanager
def global_batchnorm(module, dataset, device="cpu"):
    """Under data-parallel training, BatchNorm over the global batch in this block; yields a sampler.

    The sampler (a :class:`GeneratorDistributedSampler` in the dataset's order) gives this
    process its share of ``dataset``; outside torchrun the block changes nothing and yields None.
    """
    if not data_parallel():
        yield None
        return
    swapped = convert_batchnorm(module, device)
    try:
        yield GeneratorDistributedSampler(dataset, shuffle=False)
    finally:
        restore_batchnorm(swapped)


class GeneratorDistributedSampler(DistributedSampler):
    """``torch.utils.data.DistributedSampler`` drawing each epoch's order from ``generator``.

    The order is the one a single process's ``DataLoader(shuffle=True, generator=generator)``
    draws (the same draws from the same generator), padded to a multiple of the number of
    processes as ``DistributedSampler`` pads it; process ``rank`` takes every
    ``num_replicas``-th position from ``rank`` on. ``set_epoch`` is not needed: the generator
    advances from epoch to epoch. Every process must hold a generator in the same state.

    Parameters
    ----------
    dataset : Dataset
    generator : torch.Generator or None
        None: torch's global generator (then the processes must seed it alike).
    shuffle : bool, default=True
    num_replicas, rank : int, optional
        Default: the process group's.
    """

    def __init__(self, dataset, generator=None, shuffle=True, num_replicas=None, rank=None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, drop_last=False)
        self.generator = generator

    def __iter__(self):
        n = len(self.dataset)
        order = list(RandomSampler(self.dataset, generator=self.generator)) if self.shuffle else list(range(n))
        while len(order) < self.total_size:  # as DistributedSampler: repeat the first images
            order += order[: self.total_size - len(order)]
        return iter(order[self.rank:self.total_size:self.num_replicas])
