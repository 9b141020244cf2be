"""Per-fit random number generators, so that fitting never touches torch's global generator.

A fit draws its randomness from its own seed: weight initialization inside
:func:`seeded_init` (torch's global CPU generator is seeded there and restored afterwards,
under a lock), the training batches' order from a ``torch.Generator`` given to the
DataLoader, and the training-time randomness of the modules (dropout masks, random shifts)
from generators set on them by :func:`set_generators`. Two fits with the same seed in two
threads of one process then draw the same numbers.
"""

import contextlib
import threading

import torch
from torch import nn

__all__ = ["Dropout", "dropout", "seeded_init", "set_generators"]

_INIT_LOCK = threading.Lock()


@contextlib.contextmanager
def seeded_init(seed):
    """Run the block (building modules) with torch's CPU generator seeded with ``seed``.

    The global generator's state is restored on exit, and the block holds a process-wide
    lock, so concurrent fits in threads neither see each other's draws nor change the
    caller's random state. Build modules on the CPU inside it (move them afterwards).

    Examples
    --------
    >>> import torch
    >>> from sklearn_cgni.nn._random import seeded_init
    >>> before = torch.random.get_rng_state()
    >>> with seeded_init(0):
    ...     a = torch.nn.Linear(3, 2).weight
    >>> with seeded_init(0):
    ...     b = torch.nn.Linear(3, 2).weight
    >>> bool(torch.equal(a, b)), bool(torch.equal(before, torch.random.get_rng_state()))
    (True, True)
    """
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def dropout(x, p, training=True, generator=None):
    """``torch.nn.functional.dropout``, with the mask drawn from ``generator`` when given.

    ``generator`` must live on ``x``'s device; None uses torch's global generator.
    """
    if generator is None or not training or p == 0:
        return nn.functional.dropout(x, p, training)
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * keep / (1.0 - p)


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` whose mask comes from its ``generator`` attribute when set.

    Same state dict (none) and, with ``generator=None``, the same behavior as
    :class:`torch.nn.Dropout`; :func:`set_generators` sets and clears the generator.
    """

    generator = None

    def forward(self, x):
        return dropout(x, self.p, self.training, self.generator)


def set_generators(module, seed, device="cpu"):
    """Give every submodule that draws random numbers (a ``generator`` attribute) its own generator.

    Parameters
    ----------
    module : torch.nn.Module
    seed : int or None
        The fit's seed; submodule ``i`` (in ``module.modules()`` order) gets ``seed + i``.
        None removes the generators (do it after fitting: a generator is not picklable by
        every persistence format and its state is of no use for inference).
    device : str or torch.device, default="cpu"
        Where the module computes. A submodule with ``generator_device = "cpu"`` (it draws
        numbers it uses on the host) gets a CPU generator.
    """
    for i, m in enumerate(module.modules()):
        if not hasattr(m, "generator"):
            continue
        if seed is None:
            m.generator = None
        else:
            where = getattr(m, "generator_device", None) or device
            m.generator = torch.Generator(device=where).manual_seed(int(seed) + i)
    return module
