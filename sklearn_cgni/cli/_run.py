"""``sklearn-cgni run``: the whole method on a cohort, stage by stage, resumable.

The orchestration only: the inputs are resolved by :mod:`._inputs`, the output folder is
checked by :mod:`._folder`, and every stage lives in its own module of :mod:`.stages`,
registered with the configuration sections, inputs and upstream stages its outputs depend
on; the run plan is built from that registry. Each stage's outputs are in
``<output>/stages/<name>/`` (see :mod:`._stages`), the list of stages in :mod:`.stages`.

Under ``torchrun --nproc_per_node N -m sklearn_cgni.cli run ...`` (or ``accelerate launch``) the
``N`` processes walk the same plan, and the image CNNs train data-parallel
(:mod:`sklearn_cgni.utils._distributed`). Rank 0 alone checks and writes the output folder:
``run.json``, ``config.toml``, ``run.log``, every stage folder and ``_done.json``, the report.
The stages that train image CNNs (registered ``data_parallel``: ``brain_age``, ``finetune_f<k>``,
``scores``, ``confounds``) are computed by every process, the others writing into a scratch
folder they remove; every other stage is computed by rank 0 alone while the others wait, then
they read what rank 0 wrote. Why not let every process compute everything? The stages without
a CNN gain nothing from N copies (their own parallelism is joblib's and Dask's), and N copies
would compete for the same cores and memory; why not rank 0 alone with the others idle until a
CNN stage? Because then the others could not read its outputs, which the CNN stages need. The
resume logic stays rank 0's: it alone reads ``_done.json`` to decide whether a stage is up to
date and broadcasts the decision, so the processes never disagree on the plan. The output
folder must be visible to every process (one machine, or a shared file system).
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

from threadpoolctl import threadpool_limits

from ._config import config_fingerprint, config_slice, to_toml
from ._folder import check_output_folder
from ._inputs import InputError, Inputs, cohort_folder_inputs, inputs_fingerprint, resolve_inputs
from ._stages import progress_bar, write_json
from .stages import Run, build_plan

__all__ = ["Inputs", "InputError", "check_output_folder", "cohort_folder_inputs", "inputs_fingerprint",
           "resolve_inputs", "run_pipeline"]

log = logging.getLogger("sklearn_cgni.cli")


def _versions():
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("sklearn-cgni", "torch", "scikit-learn", "skorch", "nibabel", "nilearn", "cca-zoo",
                 "captum", "numpy", "pandas", "statsmodels"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def run_pipeline(out, config, inputs, *, force=False, progress=True, preset="paper", argv=None,
                 only=None):
    """Run every stage into ``out`` (resuming), then write results.json and report.html.

    Parameters
    ----------
    out : path-like
        Output folder (see :func:`check_output_folder` for what is refused).
    config : dict
        From :func:`sklearn_cgni.cli.load_config`.
    inputs : Inputs
        From :func:`resolve_inputs`.
    force : bool, default=False
        Use a folder holding another configuration's run (valid stages kept).
    progress : bool, default=True
        tqdm bars for the stages, the models of a fold and the epochs of each CNN.
    preset : str
        Recorded in the metadata.
    argv : list of str, optional
        The command line, recorded in the metadata.
    only : str, optional
        Stop after this stage (e.g. ``"data"``), then write the report of what exists.

    Returns
    -------
    report : pathlib.Path
        ``out / "report.html"``.
    """
    import torch

    from ..utils import keep_freed_memory, resolve_device
    from ..utils._distributed import broadcast_object, init_distributed, is_main_process, world_size
    from ._dask import SchedulerError, parse_scheduler

    keep_freed_memory()  # CPU training: no page faults on every step's buffers (utils._malloc)
    init_distributed(device=config["run"]["device"])  # under torchrun: the process group (nothing otherwise)
    main = is_main_process()
    out = Path(out)
    t_start = time.perf_counter()
    threads = int(config["run"]["threads"] or 0)
    scheduler = parse_scheduler(config["run"]["scheduler"])  # a wrong value is refused before anything runs
    if scheduler is not None and world_size() > 1:
        raise SchedulerError("run.scheduler and torchrun are two ways to run the same job: use one. torchrun "
                             "trains each CNN on several devices; --scheduler runs independent stages side by side.")
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(config["run"]["device"])
    if inputs.embedded:
        inputs_fp = config_fingerprint({"embedded": config_slice(config, "cohort"), "seed": config["run"]["seed"]})
    else:
        inputs_fp = inputs_fingerprint(inputs, config["data"]["id_column"], config["data"])
    full = config_slice(config, *config)
    fingerprint = config_fingerprint({"config": full, "inputs": inputs_fp})
    state = None
    if main:  # rank 0 alone checks and makes the folder; the others take its answer (or its refusal)
        try:
            state = check_output_folder(out, fingerprint, config, inputs_fp, force=force)
            out.mkdir(parents=True, exist_ok=True)
        except Exception as exc:
            broadcast_object(exc)
            raise
    state = broadcast_object(state)
    if isinstance(state, BaseException):
        raise state
    handler = _attach_file_log(out) if main else None
    try:  # run.threads caps torch and the BLAS/OpenMP pools of numpy, scipy and scikit-learn alike
        with threadpool_limits(limits=threads or None):
            return _run_stages(out, config, inputs, force=force, progress=progress and main, preset=preset,
                               argv=argv, only=only, device=device, inputs_fp=inputs_fp, fingerprint=fingerprint,
                               state=state, t_start=t_start, scheduler=scheduler)
    finally:
        if handler is not None:
            log.removeHandler(handler)
            logging.getLogger("py.warnings").removeHandler(handler)
            handler.close()


def _run_stages(out, config, inputs, *, force, progress, preset, argv, only, device, inputs_fp, fingerprint,
                state, t_start, scheduler=None):
    import torch

    from ..utils import keep_freed_memory
    from ..utils._distributed import is_main_process, world_size
    from ._report import write_outputs

    main = is_main_process()
    processes = f", {world_size()} processes (torchrun)" if world_size() > 1 else ""
    log.info("sklearn-cgni run -> %s (%s), device %s, preset %s%s", out, state, device, preset, processes)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta = {"fingerprint": fingerprint, "inputs_fingerprint": inputs_fp, "config": config, "preset": preset,
            "inputs": asdict(inputs), "started": started, "argv": list(argv or sys.argv), "state": state,
            "malloc_keeps_freed_memory": keep_freed_memory()}
    if world_size() > 1:
        meta["processes"] = world_size()
    if main:
        (out / "config.toml").write_text(to_toml(config))
        write_json(out / "run.json", meta)

    run = Run(out, config, inputs, progress=progress, device=device)
    run.input_fp = inputs_fp
    if inputs.embedded:
        inputs.ground_truth = os.fspath(out / "cohort" / "ground_truth.json")
    plan = build_plan(run)
    names = [p.name for p in plan]
    if only in names:
        plan = plan[:names.index(only) + 1]
    planned, parallel = None, None
    if scheduler is None:
        bar = progress_bar(plan, enabled=progress, desc="stages", unit="stage", position=0)
        try:
            for planned in bar:
                bar.set_postfix_str(planned.name)
                if planned.stage.setup is not None:
                    planned.stage.setup(run)
                run.store.run(planned.name, lambda folder, p=planned: run.execute(p, folder),
                              data_parallel=planned.stage.data_parallel, **planned.fingerprint_inputs(run))
        except BaseException as exc:
            bar.close()
            if main:
                _record_failure(out, meta, exc, run.store, planned, t_start)
            raise
    else:
        from ._dask import dask_client, run_on_dask, serial_share

        bar = progress_bar(total=len(plan), enabled=progress, desc="stages", unit="stage", position=0)
        try:
            with dask_client(scheduler) as client:
                workers = client.scheduler_info(n_workers=-1)["workers"]
                log.info("Dask scheduler %s: %d worker(s)", client.scheduler.address, len(workers))
                threads = int(config["run"]["threads"] or 0)
                if not threads and scheduler[0] == "local":  # the machine's cores shared by the workers
                    threads = max(1, (os.cpu_count() or 1) // scheduler[1])
                t_dask = time.time()
                tasks = run_on_dask(run, plan, client, threads=threads, bar=bar)
                parallel = {"scheduler": config["run"]["scheduler"], "address": client.scheduler.address,
                            "workers": len(workers), "threads_per_task": threads,
                            "serial_share": serial_share(tasks, t_dask, time.time()),
                            "stage_workers": {t["name"]: t["worker"] for t in tasks}}
        except BaseException as exc:
            bar.close()
            _record_failure(out, meta, exc, run.store, None, t_start)
            raise
    bar.close()
    if not main:  # rank 0 writes run.json and the report
        return out / "report.html"
    store = run.store
    meta.update(status="finished", error=None, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                wall_time_s=time.perf_counter() - t_start, device=device, versions=_versions(), stage_seconds=dict(store.timings),
                stage_cpu_seconds=dict(store.cpu_timings), stage_status=dict(store.status), inputs=asdict(inputs),
                threads=torch.get_num_threads(), parallel=parallel,
                machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    write_json(out / "run.json", meta)
    return write_outputs(out)


def failure_summary(exc):
    """``(status, one_line)`` of an exception that ended a run: ``"interrupted"`` or ``"failed"``."""
    if isinstance(exc, KeyboardInterrupt):
        signal_name = getattr(exc, "signal_name", "SIGINT")
        return "interrupted", f"interrupted by {signal_name}"
    text = " ".join(str(exc).split()) or "(no message)"
    return "failed", f"{type(exc).__name__}: {text}"


def _record_failure(out, meta, exc, store, planned, t_start):
    """Log the error that ended the run (one line; the traceback at debug level) and record it in run.json.

    The stage named is the one being computed (or set up) when it happened; ``None`` when the
    run failed between stages (e.g. while checking a reused stage's fingerprint).
    """
    import traceback

    stage = store.current or (planned.name if planned is not None and planned.name not in store.status else None)
    status, line = failure_summary(exc)
    exc.cgni_stage = stage  # for the command line's one-line message
    where = f"stage {stage}" if stage else "between stages"
    # in run.log only: main() prints the one line the user sees
    log.error("run %s in %s: %s", status, where, line, extra={"file_only": True})
    log.debug("traceback:\n%s", "".join(traceback.format_exception(exc)), extra={"file_only": True})
    meta.update(status=status, error={"stage": stage, "type": type(exc).__name__, "message": line},
                ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_time_s=time.perf_counter() - t_start,
                stage_seconds=dict(store.timings), stage_status=dict(store.status))
    try:
        write_json(out / "run.json", meta)
    except OSError:  # pragma: no cover - the original error matters more
        pass


def _attach_file_log(out):
    fh = logging.FileHandler(os.fspath(Path(out) / "run.log"))
    fh.setLevel(logging.DEBUG)  # the traceback of an error that ends a run is logged at debug level
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    if log.level == logging.NOTSET or log.level > logging.DEBUG:
        log.setLevel(logging.DEBUG)
    log.addHandler(fh)
    logging.getLogger("py.warnings").addHandler(fh)
    return fh
