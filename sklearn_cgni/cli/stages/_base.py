"""The stage registry, the run plan built from it, and the run state the stages share.

A stage is a function ``func(run, folder)`` (``func(run, folder, k)`` for a per-fold stage)
registered with :func:`register` next to its code, together with what its outputs depend on:
the configuration sections it reads, whether the input files matter, and the upstream stages
whose outputs it reads. Those three make the stage's fingerprint (see
:class:`~sklearn_cgni.cli._stages.StageStore`), so a stage is recomputed exactly when one of
them changed.

A stage reads upstream outputs only through :class:`Run` (:meth:`Run.path`,
:meth:`Run.result` and the loaders built on them: :meth:`Run.data`, :meth:`Run.wm`,
:meth:`Run.splits`, :meth:`Run.regions`), and may read only the stages it names in ``after``
*directly*: reading any other stage's outputs, even one upstream of a declared stage, raises
:class:`UndeclaredStageError`. A declared dependency is then also a true statement of what
the stage reads, and a stage whose outputs it reads is always in its fingerprint.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .._config import EXECUTION_KEYS, OWN_STAGE_KEYS, config_slice
from .._stages import StageStore

__all__ = ["REGISTRY", "PlannedStage", "Run", "Stage", "UndeclaredStageError", "build_plan", "register"]


class UndeclaredStageError(RuntimeError):
    """A stage read the outputs of a stage it does not declare in ``after``."""


@dataclass(frozen=True)
class Stage:
    """A registered stage.

    Parameters
    ----------
    name : str
        Folder name under ``<output>/stages``; per-fold stages get ``_f<k>`` appended.
    func : callable
        ``func(run, folder) -> dict`` (``func(run, folder, k)`` when ``per_fold``): writes
        the outputs into ``folder`` and returns the JSON-able result kept in ``_done.json``.
    config : tuple of str
        Configuration sections the stage reads (in its fingerprint), or single keys as
        ``"section.key"``. A key of ``_config.OWN_STAGE_KEYS`` is in the fingerprint only of the
        stage that names it, not of the other stages reading its section.
    after : tuple of str
        Upstream stages it reads, by name. A per-fold stage named here means the same fold
        from a per-fold stage and every fold from the others; ``"name_f<k>"`` is fold ``k``.
        A stage that is not enabled in the run (e.g. ``scores`` with ``scores.enabled =
        false``) is left out.
    inputs : bool
        Whether the input files' fingerprint is in the stage's fingerprint.
    per_fold : bool
        One stage per cross-validation fold (``protocol.folds``). Consecutive per-fold stages
        in the registry run fold by fold: ``finetune_f0, models_f0, finetune_f1, ...``.
    enabled : callable, optional
        ``enabled(run) -> bool``; the stage is in the plan only when true.
    setup : callable, optional
        ``setup(run)``, called before the stage whether it is computed or reused.
    gpu : bool
        The stage trains or runs networks: under a Dask scheduler whose workers advertise a
        ``GPU`` resource, it runs on one of those (see :mod:`.._dask`).
    cost : float
        Relative cost (seconds of the cpu-preset demo run serially, in tens): under a Dask
        scheduler, the stages on the longest chain of cost start first (see :mod:`.._dask`).
    data_parallel : bool
        The stage trains image CNNs: under ``torchrun`` every process computes it and the
        CNNs train data-parallel (see :class:`~sklearn_cgni.cli._stages.StageStore`); other
        stages are computed by rank 0 alone.
    """

    name: str
    func: Callable
    config: tuple = ()
    after: tuple = ()
    inputs: bool = False
    per_fold: bool = False
    enabled: Callable | None = None
    setup: Callable | None = None
    gpu: bool = False
    cost: float = 0.1
    data_parallel: bool = False


#: The stages in pipeline order (the order their modules are imported in).
REGISTRY: dict[str, Stage] = {}


def register(name, *, config=(), after=(), inputs=False, per_fold=False, enabled=None, setup=None, gpu=False,
             data_parallel=False, cost=0.1):
    """Decorator registering a stage function in :data:`REGISTRY` (see :class:`Stage`)."""

    def decorate(func):
        REGISTRY[name] = Stage(name, func, tuple(config), tuple(after), inputs, per_fold, enabled, setup, gpu,
                               cost, data_parallel)
        return func

    return decorate


@dataclass(frozen=True)
class PlannedStage:
    """One stage of a run's plan: its folder name, fold and resolved upstream stages."""

    name: str
    stage: Stage
    fold: int | None
    after: tuple

    def fingerprint_inputs(self, run):
        """The keyword arguments of :meth:`StageStore.run` that make this stage's fingerprint."""
        s = self.stage
        return dict(config=config_slice(run.cfg, *s.config, exclude=EXECUTION_KEYS | OWN_STAGE_KEYS)
                    if s.config else None,
                    inputs=run.input_fp if s.inputs else None, after=self.after)


def build_plan(run, registry=None):
    """The stages of ``run`` in order, with per-fold stages expanded and upstream stages resolved."""
    registry = REGISTRY if registry is None else registry
    stages = [s for s in registry.values() if s.enabled is None or s.enabled(run)]
    enabled = {s.name: s for s in stages}
    folds = range(run.cfg["protocol"]["folds"])

    def resolve(stage, k):
        out = []
        for a in stage.after:
            fold = re.fullmatch(r"(.+)_f(\d+)", a)
            base = fold.group(1) if fold and fold.group(1) in registry else a
            if base not in registry:
                raise ValueError(f"stage {stage.name!r}: unknown upstream stage {a!r}")
            if base not in enabled:
                continue
            if not registry[base].per_fold:
                out.append(base)
            elif fold and base != a:
                out.append(a)
            else:
                out += [f"{base}_f{j}" for j in ([k] if k is not None else folds)]
        return tuple(out)

    plan, i = [], 0
    while i < len(stages):
        block = [stages[i]]
        while stages[i].per_fold and i + len(block) < len(stages) and stages[i + len(block)].per_fold:
            block.append(stages[i + len(block)])
        if stages[i].per_fold:
            plan += [PlannedStage(f"{s.name}_f{k}", s, k, resolve(s, k)) for k in folds for s in block]
        else:
            plan.append(PlannedStage(stages[i].name, stages[i], None, resolve(stages[i], None)))
        i += len(block)
    return plan


class WMRows:
    """Rows of a memory-mapped participants × columns array, read only where indexed (``Run.wm(genotypes="lazy")``).

    ``G[idx]`` is ``mmap[rows[idx]]``, an in-memory array of those rows.
    """

    def __init__(self, mmap, rows):
        self.mmap, self.rows = mmap, rows
        self.shape = (len(rows), mmap.shape[1])

    def __getitem__(self, idx):
        return self.mmap[self.rows[idx]]


class Run:
    """State shared by the stages of one ``run``, and their only access to upstream outputs."""

    def __init__(self, out, config, inputs, *, progress, device):
        self.out = Path(out)
        self.cfg = config
        self.inputs = inputs
        self.progress = progress
        self.device = device
        self.store = StageStore(self.out / "stages")
        self.seed = int(config["run"]["seed"])
        self.input_fp = None
        self.current = None  # the PlannedStage running now

    # ---------------------------------------------------------------- running
    @contextlib.contextmanager
    def running(self, planned):
        """Within this block, reads are checked against ``planned.after``."""
        previous, self.current = self.current, planned
        try:
            yield
        finally:
            self.current = previous

    def execute(self, planned, folder):
        """Run ``planned``'s function into ``folder`` (reads checked)."""
        with self.running(planned):
            if planned.fold is None:
                return planned.stage.func(self, folder)
            return planned.stage.func(self, folder, planned.fold)

    def call(self, name, folder):
        """Run the stage ``name`` of this run's plan into ``folder``, without the store (tests, tools)."""
        plan = {p.name: p for p in build_plan(self)}
        return self.execute(plan[name], folder)

    def reads(self, stage):
        """Whether the running stage declares ``stage`` upstream (and it is in this run's plan)."""
        return self.current is not None and stage in self.current.after

    def _check_read(self, stage):
        if self.current is None:
            raise UndeclaredStageError(f"the outputs of stage {stage!r} are read outside a running stage")
        if stage not in self.current.after:
            raise UndeclaredStageError(
                f"stage {self.current.name!r} reads the outputs of stage {stage!r}, which it does not declare: "
                f"add it to the stage's `after` (declared: {list(self.current.after)})")

    # ---------------------------------------------------------------- upstream outputs
    def path(self, stage):
        """The folder of a declared upstream stage's outputs."""
        self._check_read(stage)
        return self.store.path(stage)

    def result(self, stage):
        """The result dict of a declared upstream stage (from its ``_done.json``)."""
        self._check_read(stage)
        return self.store.done_info(stage)["result"]

    def data(self):
        d = self.path("data")
        text = {c: str for c in ("participant_id", *self.cfg["data"]["categorical"])}  # levels as written
        parts = pd.read_csv(d / "participants.csv", dtype=text, keep_default_na=False,
                            na_values=[""]).set_index("participant_id")
        snps = pd.read_csv(d / "snps.csv", dtype={"snp": str})["snp"].tolist()
        G = np.load(d / "genotypes_qc.npy", mmap_mode="r")  # read-only; read from disk only where used
        return parts, snps, G

    def wm(self, genotypes=True):
        """The WM participants: their rows of the participants table, WM labels, genotypes and SNP names.

        ``genotypes``: ``True`` reads the WM rows of the memory-mapped genotype matrix into memory (0.2 GB at
        45,000 WM participants); ``"lazy"`` gives a :class:`WMRows` that reads only the rows it is indexed
        with; ``False`` gives None, for a stage that does not use them.
        """
        parts, snps, G = self.data()
        mask = parts["wm_group"].notna().to_numpy() & parts["image_qc_passed"].to_numpy()
        wm = parts[mask]
        y = wm["wm_group"].astype(int).to_numpy()
        if genotypes == "lazy":
            return wm, y, WMRows(G, np.flatnonzero(mask)), snps
        return wm, y, (G[mask] if genotypes else None), snps

    def images(self, paths):
        """The images of ``paths`` (a Series of image files indexed by participant ID, as in :meth:`data`) for
        a CNN.

        With ``stage1.image_cache`` (the default) a stage that declares ``image_cache`` upstream reads them
        from that stage's float16 memory map, decoded once (an :class:`~sklearn_cgni.io.ImageSource` of its
        rows; IDs, paths and affine unchanged); otherwise, or for a stage that does not declare it, ``paths``
        itself.
        """
        if not self.reads("image_cache"):
            return paths
        from ...io import ImageSource, check_images

        d, info = self.path("image_cache"), self.result("image_cache")
        ids = pd.Index((d / "participants.txt").read_text().split())
        rows = ids.get_indexer(pd.Index(paths.index.astype(str)))
        if (rows < 0).any():
            raise RuntimeError(f"image_cache stage: no cached image for participant(s) "
                               f"{list(paths.index[rows < 0][:5])}")
        cache = np.memmap(d / info["file"], dtype=info["dtype"], mode="r", shape=tuple(info["shape"]))
        if "affine" not in info:  # a cache written before the stage recorded the affine: read the headers
            return check_images(paths, caller="sklearn-cgni run").backed_by(cache, rows)
        # the data stage checked these headers: no pass over the files in this process
        return ImageSource.decoded(paths, cache, rows, affine=info["affine"])

    def pgs(self, participants=None):
        """Polygenic scores (``data.pgs``) of the given participants (default: the WM rows), or None."""
        if not self.cfg["data"]["pgs"]:
            return None
        path = self.path("pgs") / "pgs_scores.csv"
        scores = pd.read_csv(path, dtype={"participant_id": str}).set_index("participant_id")
        if participants is None:
            participants = self.wm(genotypes=False)[0].index
        return scores.reindex(pd.Index(participants)).to_numpy(dtype=np.float64)

    def splits(self):
        split = json.loads((self.path("data") / "splits.json").read_text())
        train = np.asarray(split["train"])
        hold = np.asarray(split["holdout"])
        cv = [(np.asarray(a), np.asarray(b)) for a, b in split["folds"]]
        return train, hold, cv

    def regions(self, participants=None):
        """Regional gray-matter means and the region names.

        Rows: the given participant IDs, by default the WM participants (rows as :meth:`wm`).
        """
        d = self.path("regions")
        ids = pd.read_csv(d / "participants.csv", dtype={"participant_id": str})["participant_id"]
        if participants is None:
            participants = self.wm(genotypes=False)[0].index
        rows = pd.Index(ids).get_indexer(pd.Index(participants))
        if (rows < 0).any():
            raise RuntimeError(f"regions stage: no regional means for participant(s) "
                               f"{list(pd.Index(participants)[rows < 0][:5])}")
        R = np.load(d / "regional_means.npy", mmap_mode="r")[rows]
        return np.asarray(R), pd.read_csv(d / "regions.csv")["region"].astype(str).tolist()
