"""Where the work of a study or a sweep runs: here, or on a Dask cluster.

``scheduler`` is None (here, one thing after the other), ``"local:N"`` (a
``dask.distributed.LocalCluster`` of N single-threaded worker processes
started for the run), the address of a running scheduler
(``"tcp://host:8786"``, started with ``dask scheduler`` and joined by
``dask worker tcp://host:8786`` on each machine that has ``pip install
fixedpoint``), or a ``distributed.Client``.  dask and distributed are the
optional extra ``fixedpoint[dask]``; nothing here imports them before a
scheduler is asked for.

:func:`map_profiles` runs a study's profiles on the workers
(``fixedpoint study --scheduler``); :mod:`fixedpoint.sweep` runs its cells
through :func:`connect` the same way.  This module knows nothing of
workloads: the caller hands over the function that evaluates one profile.

Examples
--------
>>> with connect(None) as client:
...     print(client)
None
>>> with connect("local:x") as client:
...     pass
Traceback (most recent call last):
...
ValueError: scheduler: expected local:N with N >= 1 worker processes, got 'local:x'
"""
from __future__ import annotations

import contextlib

from ._checks import get_num_threads, set_num_threads

__all__ = ["connect", "map_profiles", "running_tasks", "one_thread", "DASK_HINT"]

#: How to install what a scheduler needs.
DASK_HINT = 'pip install "fixedpoint[dask]"'


def _parse(scheduler):
    """('none' | 'local' | 'address' | 'client', value)."""
    if scheduler is None:
        return "none", None
    if not isinstance(scheduler, str):
        if hasattr(scheduler, "submit") and hasattr(scheduler, "scatter"):
            return "client", scheduler
        raise TypeError(f"scheduler: expected None, 'local:N', an address or a distributed.Client, "
                        f"got {type(scheduler).__name__}")
    s = scheduler.strip()
    if s.lower() in ("", "none"):
        return "none", None
    if s.startswith("local"):
        n = s[len("local"):].lstrip(":")
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"scheduler: expected local:N with N >= 1 worker processes, got {scheduler!r}")
        return "local", int(n)
    if "://" not in s and ":" not in s:
        raise ValueError(f"scheduler: expected none, local:N or a scheduler address (tcp://host:8786), "
                         f"got {scheduler!r}")
    return "address", s


@contextlib.contextmanager
def connect(scheduler, *, stream=None):
    """A ``distributed.Client`` for ``scheduler``, or None to run here.

    A LocalCluster started here is closed on exit; a given Client is left
    open.  The dashboard link, when there is one, is printed on ``stream``.
    Without dask: ``ImportError`` saying how to install it.
    """
    kind, value = _parse(scheduler)
    if kind == "none":
        yield None
        return
    if kind == "client":
        yield value
        return
    try:
        import distributed
    except ImportError:
        raise ImportError(f"scheduler: running on Dask needs dask and distributed: {DASK_HINT}") from None
    cluster = None
    if kind == "local":
        # a free port for the scheduler's HTTP server (8787 may be taken by another cluster)
        cluster = distributed.LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=40)
        client = distributed.Client(cluster)
    else:
        try:
            client = distributed.Client(value, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise ValueError(f"scheduler: cannot reach {value!r}: {e}") from None
    try:
        link = getattr(client, "dashboard_link", None)
        if link and stream is not None:
            try:
                import bokeh  # noqa: F401 - the dashboard's pages need it
                note = ""
            except ImportError:
                note = " (its pages need bokeh: pip install bokeh)" if cluster is not None else ""
            print(f"dask dashboard: {link}{note}", file=stream)
            stream.flush()
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def one_thread(fn, *args):
    """``fn(*args)`` with the kernels on one thread: what a task runs on a worker.

    A cluster's parallelism is its tasks (one per worker thread); kernel thread
    teams on top of that only oversubscribe the cores (and the bits never
    depend on the thread count)."""
    before = get_num_threads()
    set_num_threads(1)
    try:
        return fn(*args)
    finally:
        set_num_threads(before)


def running_tasks(client, keys) -> int:
    """How many of ``keys`` the workers are processing now (for progress lines)."""
    try:
        proc = client.processing()
    except Exception:           # noqa: BLE001 - only for the progress line
        return 0
    return sum(1 for ks in proc.values() for k in ks if k in keys)


def map_profiles(workload, profiles, reference, scheduler, progress=None, *, evaluate):
    """``evaluate(workload, profile, reference)`` for each profile, on ``scheduler``.

    The workload and the reference result are scattered to every worker once;
    each task ships only its profile.  Yields ``(profile, result)`` in the
    order of ``profiles`` (as soon as that order allows).  ``progress``: a
    :class:`fixedpoint.study.Progress` (``step`` per profile).
    """
    plist = list(profiles)
    stream = progress.stream if progress is not None and progress.enabled else None
    with connect(scheduler, stream=stream) as client:
        if client is None:
            for p in plist:
                r = evaluate(workload, p, reference)
                if progress is not None:
                    progress.step(p.name, "done")
                yield p, r
            return
        from distributed import as_completed
        # (lists: Client.scatter reads a dict as {key: data})
        wf, rf = client.scatter([workload, reference], broadcast=True, hash=False)
        futs = {client.submit(one_thread, evaluate, wf, p, rf, pure=False): i for i, p in enumerate(plist)}
        if progress is not None:
            progress.show("", f"{len(client.scheduler_info()['workers'])} workers")
        done, nxt = {}, 0
        for fut in as_completed(futs):
            i = futs[fut]
            done[i] = fut.result()
            if progress is not None:
                progress.step(plist[i].name, "done")
            while nxt in done:
                yield plist[nxt], done.pop(nxt)
                nxt += 1
