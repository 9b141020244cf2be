"""The stages of ``sklearn-cgni run`` as Dask distributed tasks (``--scheduler`` / ``run.scheduler``).

Each stage of the run plan (:func:`~.stages.build_plan`) becomes one task, submitted by the main
process as soon as the stages it reads (its ``after``) have finished, so independent stages
run side by side: the folds' fine-tuning and models, the brain-genotype scores, the confound
table, the training curves. At most as many stage tasks are in flight as the workers have
threads, the one with the longest chain of work after it first (each stage's ``cost``). The task runs the stage
exactly as the serial run does, through the same :class:`~._stages.StageStore` in the same
output folder, which must therefore be on a file system every worker sees (as the inputs
must): a finished stage is marked done by its ``_done.json`` and a rerun resumes from there.

What makes the tables the serial run's:

- a stage's random choices come from ``run.seed`` and the stage's own identity (its name and
  fold), never from the order stages run in or from a random state another stage left behind:
  each task builds a fresh :class:`~.stages.Run` in the worker;
- every task uses ``run.threads`` CPU threads (``local:N`` with ``threads = 0`` shares the
  machine's cores between its N workers), and the tables equal the serial run's with the
  same ``run.threads``.

Workers that advertise a ``GPU`` resource (``dask worker --resources GPU=1``) take the
stages that train or run networks (registered with ``gpu=True``); the others go anywhere.
The units inside a stage (cross-fitting folds ...) run inside its task: handed to the cluster
through joblib's Dask backend from within a worker, they stayed on that worker while the
other idled, so the stage task does not do that. A
failed task is retried once (``retries=1``), then the run ends with a one-line error naming
the stage, as in the serial run. On Ctrl-C the tasks not yet started are cancelled; a task
already running on a remote worker finishes there (Dask cannot stop a running task), and its
stage is reused by the next run when it finished.

``local:N`` starts a :class:`distributed.LocalCluster` of N single-threaded worker processes
on this machine; any other value is a scheduler's address (``tcp://host:8786``) or a
scheduler file (``--scheduler-file`` of ``dask scheduler``, e.g. as dask-jobqueue's SLURM
clusters write it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path

__all__ = ["SchedulerError", "parse_scheduler", "dask_client", "run_on_dask", "serial_share"]

log = logging.getLogger("sklearn_cgni.cli")

_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc|ws|wss)://\S+$")


class SchedulerError(ValueError):
    """``run.scheduler`` cannot be used (unknown form, or no scheduler answers there)."""


def parse_scheduler(value):
    """``run.scheduler`` as ``(kind, value)``; ``None`` for a serial run.

    Parameters
    ----------
    value : str
        ``""`` (serial), ``"local"`` or ``"local:N"``, a scheduler address such as
        ``"tcp://host:8786"``, or the path of a scheduler file (``.json``).

    Returns
    -------
    spec : tuple or None
        ``("local", n_workers)``, ``("address", address)``, ``("file", path)`` or ``None``.

    Examples
    --------
    >>> parse_scheduler("local:2")
    ('local', 2)
    >>> parse_scheduler("tcp://10.0.0.1:8786")
    ('address', 'tcp://10.0.0.1:8786')
    >>> parse_scheduler("") is None
    True
    """
    value = (value or "").strip()
    if not value:
        return None
    local = re.fullmatch(r"local(?::(\d+))?", value)
    if local:
        n = int(local.group(1)) if local.group(1) else (os.cpu_count() or 1)
        if n < 1:
            raise SchedulerError(f"run.scheduler: 'local:N' needs N >= 1 workers; got {value!r}.")
        return ("local", n)
    if _ADDRESS.match(value):
        return ("address", value)
    if value.endswith(".json"):
        return ("file", os.path.abspath(value))
    raise SchedulerError(f"run.scheduler must be 'local', 'local:N', a scheduler address such as "
                         f"'tcp://host:8786' or a scheduler file (.json); got {value!r}.")


@contextlib.contextmanager
def dask_client(spec):
    """A :class:`distributed.Client` for ``spec`` (from :func:`parse_scheduler`); closed on exit."""
    from distributed import Client, LocalCluster

    kind, value = spec
    cluster = None
    try:
        if kind == "local":
            import dask

            # - MALLOC_TRIM_THRESHOLD_=65536, which Dask's nannies set for their workers, made glibc hand memory
            #   back to the system after every freed tensor: a stage then ran 1.5x slower than in this process
            #   (kernel time), the same computation otherwise; unset, as outside Dask
            # - the workers' statistical profiler and GIL monitor sample the training threads: off
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                                  "distributed.worker.profile.enabled": False,
                                  "distributed.admin.system-monitor.gil.enabled": False}):
                cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR)
            client = Client(cluster)
        elif kind == "file":
            if not Path(value).exists():
                raise SchedulerError(f"run.scheduler: no scheduler file at {value!r}.")
            client = Client(scheduler_file=value, timeout="30s")
        else:
            client = Client(value, timeout="30s")
    except OSError as exc:  # no scheduler answering there
        if cluster is not None:
            cluster.close()
        raise SchedulerError(f"run.scheduler: cannot connect to {value!r}: {exc}") from exc
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _workers_with(client, resource):
    return [w for w, info in client.scheduler_info(n_workers=-1)["workers"].items()
            if info.get("resources", {}).get(resource, 0) >= 1]


def _stage_task(name, out, config, inputs, input_fp, threads, *upstream):
    """Run stage ``name`` of the plan in a worker; what the main process needs to go on.

    ``upstream``: the results of this task's upstream tasks (the stages it reads), whose
    fingerprints make this stage's.
    """
    import torch
    from threadpoolctl import threadpool_limits

    from ..utils import resolve_device
    from .stages import Run, build_plan

    start = time.time()
    if threads:  # in the thread that runs the stage: OpenMP's thread count is a per-thread setting
        torch.set_num_threads(threads)
    run = Run(out, config, inputs, progress=False, device=resolve_device(config["run"]["device"]))
    run.input_fp = input_fp
    for up in upstream:
        run.store.fingerprints[up["name"]] = up["fingerprint"]
    handler = _attach_file_log(out)
    try:
        with threadpool_limits(limits=threads or None):
            for planned in build_plan(run):  # the setups up to this stage, as the serial run calls them
                if planned.stage.setup is not None:
                    planned.stage.setup(run)
                if planned.name == name:
                    break
            else:  # pragma: no cover - the main process submits only planned stages
                raise RuntimeError(f"stage {name!r} is not in the run's plan")
            run.store.run(name, lambda folder, p=planned: run.execute(p, folder), **planned.fingerprint_inputs(run))
    finally:
        _detach_file_log(handler)
    try:
        from distributed import get_worker

        worker = get_worker().address
    except ValueError:  # pragma: no cover - run outside a worker (tests)
        worker = None
    return {"name": name, "fingerprint": run.store.fingerprints[name], "seconds": run.store.timings[name],
            "cpu_seconds": run.store.cpu_timings[name], "status": run.store.status[name], "start": start,
            "stop": time.time(), "worker": worker, "pid": os.getpid()}


_LOG_LOCK = threading.Lock()
_LOG_HANDLERS = {}  # run.log path -> [handler, number of tasks using it] in this worker process


def _attach_file_log(out):
    """The stage's log lines and warnings, appended to the run's ``run.log``, not to the worker's own log.

    One handler per worker process and output folder, shared by the tasks running in it at the
    same time (threads of one worker: a stage waiting on its cross-fitting folds runs beside
    them), so that each line is written once.
    """
    path = os.fspath(Path(out) / "run.log")
    with _LOG_LOCK:
        if path not in _LOG_HANDLERS:
            fh = logging.FileHandler(path)
            fh.setLevel(logging.DEBUG)
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [worker %(process)d] %(message)s"))
            if log.level == logging.NOTSET or log.level > logging.DEBUG:
                log.setLevel(logging.DEBUG)
            log.addHandler(fh)
            logging.captureWarnings(True)
            logging.getLogger("py.warnings").addHandler(fh)
            _LOG_HANDLERS[path] = [fh, 0]
        _LOG_HANDLERS[path][1] += 1
        log.propagate = False
    return path


def _detach_file_log(path):
    with _LOG_LOCK:
        entry = _LOG_HANDLERS[path]
        entry[1] -= 1
        if entry[1] == 0:
            fh = _LOG_HANDLERS.pop(path)[0]
            log.removeHandler(fh)
            logging.getLogger("py.warnings").removeHandler(fh)
            fh.close()
        if not _LOG_HANDLERS:
            log.propagate = True


def _critical_path(plan):
    """Each stage's task priority: the longest chain of work from it to the end of the run.

    The work of a stage is its registered ``cost`` (relative seconds of the cpu-preset demo run
    serially), so the stages that train CNNs and those the confound table and occlusion wait for
    start first, and short stages that nothing waits for come last.
    """
    children = {p.name: [q.name for q in plan if p.name in q.after] for p in plan}
    cost = {p.name: p.stage.cost for p in plan}
    memo = {}

    def path(name):
        if name not in memo:
            memo[name] = cost[name] + max((path(c) for c in children[name]), default=0)
        return memo[name]

    return {p.name: path(p.name) for p in plan}


def run_on_dask(run, plan, client, *, threads, bar=None):
    """Submit ``plan``'s stages to ``client`` and wait for them; the store records each as it ends.

    Parameters
    ----------
    run : Run
        The main process's run state; its store receives each stage's fingerprint, time and status.
    plan : list of PlannedStage
        The stages to run, in plan order (each one's upstream stages before it).
    client : distributed.Client
    threads : int
        ``run.threads`` of each task (0: the libraries' defaults).
    bar : tqdm, optional
        Advanced once per finished stage.

    Returns
    -------
    tasks : list of dict
        Per stage: name, worker, start and stop (seconds since the epoch), seconds, status.
    """
    from distributed import as_completed

    from ._dask_worker import ThreadsPlugin

    client.register_plugin(ThreadsPlugin(threads))
    workers = client.scheduler_info(n_workers=-1)["workers"]
    gpu = bool(_workers_with(client, "GPU")) and run.device != "cpu"
    slots = max(1, sum(int(info.get("nthreads", 1)) for info in workers.values()))
    priority = _critical_path(plan)
    token = uuid.uuid4().hex[:8]
    pending = {p.name: p for p in plan}
    done, running, tasks = {}, {}, []
    finished = as_completed()

    def submit_ready():
        """The stages whose upstream stages are done, the longest chain first, while a worker thread is free.

        Submitted with their upstream results as values (not futures), so the scheduler places each
        on a free worker rather than next to a small upstream result.
        """
        ready = sorted((p for p in pending.values() if all(a in done for a in p.after)),
                       key=lambda p: -priority[p.name])
        for planned in ready[:max(0, slots - len(running))]:
            resources = {"GPU": 1} if gpu and planned.stage.gpu else None
            fut = client.submit(_stage_task, planned.name, run.out, run.cfg, run.inputs, run.input_fp, threads,
                                *[done[a] for a in planned.after], key=f"cgni-{planned.name}-{token}", pure=False,
                                retries=1, resources=resources, priority=priority[planned.name])
            running[fut.key] = (planned.name, fut)
            del pending[planned.name]
            finished.add(fut)

    try:
        submit_ready()
        for fut in finished:
            name = running.pop(fut.key)[0]
            if fut.status != "finished":
                run.store.current = name
                exc = fut.exception()
                if exc is None:  # cancelled: a worker or the scheduler went away
                    raise RuntimeError(f"the task of stage {name!r} was cancelled (a worker or the scheduler "
                                       "went away)")
                raise exc
            res = fut.result()
            done[name] = res
            store = run.store
            store.fingerprints[name] = res["fingerprint"]
            store.timings[name] = res["seconds"]
            store.cpu_timings[name] = res["cpu_seconds"]
            store.status[name] = res["status"]
            tasks.append(res)
            log.info("stage %-14s %s on worker %s (%.1f s)", name,
                     "done" if res["status"] == "computed" else "up to date", res["worker"], res["seconds"])
            if bar is not None:
                bar.set_postfix_str(name)
                bar.update(1)
            submit_ready()
    except BaseException:
        client.cancel([f for _, f in running.values()])
        raise
    return tasks


def serial_share(tasks, start, stop):
    """Share of the wall time ``[start, stop]`` with at most one stage running.

    Examples
    --------
    >>> serial_share([{"start": 0, "stop": 10}, {"start": 5, "stop": 10}], 0, 10)
    0.5
    """
    events = sorted([(t["start"], 1) for t in tasks] + [(t["stop"], -1) for t in tasks])
    parallel, running, last = 0.0, 0, start
    for when, step in events:
        if running >= 2:
            parallel += when - last
        running += step
        last = when
    total = stop - start
    return (total - parallel) / total if total > 0 else 1.0
