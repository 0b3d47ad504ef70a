"""Executors: who computes a stage's pending shards. ``local`` (this process) and ``ray`` (Ray actors).

An executor takes a :class:`~objalign.compute.shards.ShardWork` and a list of shard indices and returns the
receipts of the shards it wrote. It owns nothing else: the stage decides which shards are pending, the work
writes them (atomically, completion marker last), the store says what is done.

The Ray executor starts one actor per worker (``num_gpus=gpus_per_worker``; Ray's GPUs are logical, so this
is also how tests schedule "GPU" actors on a CPU machine); each actor builds the work's model once and takes
whole shards, one at a time with the next one queued behind it. A worker that is lost (its process or its
node died) is dropped and its shards go back to the queue for the live workers, while a replacement starts
where the cluster has room (``start_timeout_s``); recomputing a shard is harmless because writing one is
idempotent. The stage fails, keeping every finished shard, only when no worker is left or a shard was lost
with ``max_restarts + 1`` workers. Every wait is bounded: connecting (``connect_timeout_s``), starting the actors
(``start_timeout_s``); a request the cluster can never place fails before any model loads.
"""

from __future__ import annotations

import gc
import math
import os
import socket
import sys
import time
from collections import deque

from objalign.compute.shards import ShardWork, check_partition
from objalign.errors import ObjalignError
from objalign.registry import Registry

EXECUTORS = Registry("executor")
EXECUTORS.register("local", "objalign.compute.executors:LocalExecutor", "this process, one device (default)")
EXECUTORS.register("ray", "objalign.compute.executors:RayExecutor",
                   "Ray actors, one per GPU, on this node or a cluster (extra 'ray')")

RAY_EXTRA = "pip install 'objalign[ray]'"


def check_compute(compute) -> None:
    """Everything about ``compute`` that can be checked without starting anything (one line each)."""
    EXECUTORS.entry(compute.executor)
    check_partition(compute.num_workers, compute.worker_index)
    w = compute.workers
    if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
        raise ObjalignError(f"--workers {w!r} (compute.workers): must be a positive integer (or null: one per GPU)")
    g = compute.gpus_per_worker
    if g is not None and (not isinstance(g, (int, float)) or g < 0 or (g > 1 and not float(g).is_integer())):
        raise ObjalignError(f"compute.gpus_per_worker = {g!r}: expected 0 (CPU workers), a fraction up to 1 "
                            "(0.5 puts two workers on one GPU) or a whole number of GPUs")
    t = compute.threads_per_worker
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
        raise ObjalignError(f"compute.threads_per_worker = {t!r}: must be a positive integer (or null)")
    if compute.cpus_per_worker < 0 or compute.connect_timeout_s <= 0 or compute.start_timeout_s <= 0:
        raise ObjalignError("compute.cpus_per_worker must be >= 0 and compute.connect_timeout_s, "
                            "compute.start_timeout_s > 0")
    if compute.max_restarts < 0:
        raise ObjalignError(f"compute.max_restarts = {compute.max_restarts}: must be >= 0")
    if compute.executor == "ray":
        _import_ray()


def make_executor(compute, local_only: bool = False):
    """The executor ``compute.executor`` names (checked); ``local_only`` for work without a model."""
    check_compute(compute)
    return LocalExecutor(compute) if local_only else EXECUTORS.get(compute.executor, compute=compute)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ObjalignError(f"compute.executor = ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


class LocalExecutor:
    """Shards computed here, in order, with one model (built now, or ``state`` if the stage already has it)."""

    name = "local"
    runs_here = True  #: the model runs in this process (so the stage may reuse one it built)

    def __init__(self, compute=None, **_: object):
        self.compute = compute
        self.workers = 1

    def run(self, work: ShardWork, shards: list[int], progress: bool = True, state=None) -> list[dict]:
        if not shards:
            return []
        return work.run(work.setup() if state is None else state, list(shards), progress)


class _ShardActor:
    """The body of a Ray actor: computes the shards it is sent, building the work's model only when the work
    asks for a different one than it holds (so one actor serves the crop stage's SAM, then the embed stage's
    encoder, and the shards of several runs).

    The work travels as a boxed object reference with every shard, so an actor that Ray restarted after a
    crash fetches the right work again before it retries the shard.
    """

    def __init__(self, threads: int):
        if threads >= 1:
            try:
                import torch

                torch.set_num_threads(threads)
            except ImportError:  # pragma: no cover - a model stage always has torch
                pass
        self.work_id = self.model_key = self.work = self.state = None

    def ready(self) -> int:
        return os.getpid()

    def run(self, boxed_work: list, shard: int) -> list[dict]:
        import ray

        ref = boxed_work[0]
        if ref.hex() != self.work_id:
            work = ray.get(ref)
            key = repr(getattr(work, "model_key", lambda: id(work))())
            if key != self.model_key:
                self.state = self.model_key = None  # free the old model before loading the next
                _free_accelerator_memory()
                self.state, self.model_key = work.setup(), key
            self.work, self.work_id = work, ref.hex()
        return self.work.run(self.state, [shard], False)


def _free_accelerator_memory() -> None:

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


#: Actors kept between runs of this driver (one set, for one resource shape): ``{"key", "job", "actors"}``.
#: They hold their GPUs until the driver exits or :func:`release_workers` is called.
_POOL: dict = {}


def release_workers() -> int:
    """End the Ray workers this process keeps between runs (freeing their GPUs for other jobs); returns how many."""
    actors = _POOL.pop("actors", [])
    _POOL.clear()
    if actors:
        import ray

        if ray.is_initialized():
            for a in actors:
                try:
                    ray.kill(a)
                except ray.exceptions.ActorHandleNotFoundError:  # from an earlier Ray session: nothing to free
                    pass
    return len(actors)


class RayExecutor:
    """Shards computed by Ray actors (see the module docstring). ``connect()`` is separate from ``run()`` so a
    bad address or an impossible request fails before the stage loads anything."""

    name = "ray"
    runs_here = False

    def __init__(self, compute, **_: object):
        self.compute = compute
        self.workers: int | None = None
        self.gpus_per_worker: float | None = None
        self.stats: dict = {}

    # -- connecting ------------------------------------------------------------------------------------------
    def connect(self):
        """Start or join Ray (bounded in time), then resolve and check the worker request against the cluster."""
        ray = _import_ray()
        c = self.compute
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "logging_level": "warning", "log_to_driver": True}
            if c.ray_address is None:
                ray.init(address="local", **kwargs)
            else:
                _probe(c.ray_address, c.connect_timeout_s)
                try:
                    ray.init(address=c.ray_address, **kwargs)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise ObjalignError(f"compute.ray_address = {c.ray_address!r}: could not join a Ray cluster "
                                        f"({str(exc).splitlines()[0]}); start one with `ray start --head`, or use "
                                        "ray_address: null for a private Ray on this machine") from None
        self._resolve(ray)
        return ray

    def _resolve(self, ray) -> None:
        c = self.compute
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        gpus = sum(n.get("GPU", 0.0) for n in nodes)
        g = c.gpus_per_worker if c.gpus_per_worker is not None else (1.0 if gpus > 0 else 0.0)
        w = c.workers if c.workers is not None else (max(1, int(gpus // g)) if g > 0 else 1)
        where = f"the Ray cluster ({c.ray_address or 'private, this machine'})"
        for res, per, flag in (("GPU", g, "compute.gpus_per_worker"), ("CPU", c.cpus_per_worker,
                                                                        "compute.cpus_per_worker")):
            if per <= 0:
                continue
            fit = sum(int(math.floor(n.get(res, 0.0) / per + 1e-9)) for n in nodes)
            if w > fit:
                have = [n.get(res, 0.0) for n in nodes]
                raise ObjalignError(
                    f"--workers {w} with {flag} = {per:g} needs {w * per:g} {res}s, but {where} can place at most "
                    f"{fit} such workers ({res}s per node: {', '.join(f'{x:g}' for x in have) or 'none'}); they "
                    f"would wait forever: use --workers {max(fit, 1)}" + (" or a smaller compute.gpus_per_worker "
                                                                          "(0.5 puts two on one GPU)" if res == "GPU"
                                                                          else ""))
        self.workers, self.gpus_per_worker = int(w), float(g)

    # -- running ---------------------------------------------------------------------------------------------
    def run(self, work: ShardWork, shards: list[int], progress: bool = True, state=None) -> list[dict]:
        """Compute ``shards`` on the actors; returns their receipts in completion order."""
        del state  # the model is built by each actor
        shards = list(shards)
        if not shards:
            return []
        ray = self.connect()
        t0 = time.perf_counter()
        actors = self._actors(ray, min(self.workers, len(shards)))
        t_ready = time.perf_counter()
        boxed = [ray.put(work)]
        receipts = self._dispatch(ray, actors, shards, boxed, work.name, progress)
        self.stats = {"start_s": t_ready - t0, "compute_s": time.perf_counter() - t_ready}
        return receipts

    def _actors(self, ray, n: int) -> list:
        """``n`` started actors: the ones kept from this driver's earlier runs if they have the same shape (and
        still answer), plus new ones; waits at most ``start_timeout_s`` for the new ones to start."""
        c = self.compute
        threads = c.threads_per_worker or _driver_threads()
        key = (self.gpus_per_worker, c.cpus_per_worker, threads, c.max_restarts)
        ctx = ray.get_runtime_context()
        job = (ctx.get_session_name(), ctx.get_job_id())  # job ids start again in every Ray session
        kept = _POOL.get("actors", []) if _POOL.get("key") == key and _POOL.get("job") == job else []
        if not kept and _POOL.get("actors") and _POOL.get("job") == job:
            for a in _POOL["actors"]:  # another shape: free their GPUs before asking for new ones
                ray.kill(a)
        alive = []
        if kept:
            refs = [a.ready.remote() for a in kept]
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=min(30.0, c.start_timeout_s))
            for a, r in zip(kept, refs):
                try:
                    if r in done:
                        ray.get(r)
                        alive.append(a)
                except ray.exceptions.RayError:
                    pass
        actor_cls = self._actor_class(ray)
        new = [actor_cls.remote(threads) for _ in range(max(0, n - len(alive)))]
        if new:
            refs = [a.ready.remote() for a in new]
            done, pending = ray.wait(refs, num_returns=len(refs), timeout=c.start_timeout_s)
            if pending:
                for a in new:
                    ray.kill(a)
                raise ObjalignError(f"{len(pending)} of {len(refs)} Ray workers did not start within "
                                    f"{c.start_timeout_s:g} s (compute.start_timeout_s): the cluster has no room for "
                                    "them now (other jobs hold its GPUs?); check `ray status`")
        _POOL.update({"key": key, "job": job, "actors": alive + new})
        return (alive + new)[:n]

    def _actor_class(self, ray):
        """The actor class with this run's resources. Ray never restarts a worker nor retries its task: a dead
        worker's shards go back to the queue and :meth:`_dispatch` starts its replacement (Ray's task retries on
        a dead actor were spent before it could come back, and a node's loss then ended the whole run)."""
        c = self.compute
        return ray.remote(_ShardActor).options(num_gpus=self.gpus_per_worker, num_cpus=c.cpus_per_worker,
                                               max_restarts=0, max_task_retries=0)

    def _dispatch(self, ray, actors, shards: list[int], boxed_work: list, what: str, progress: bool) -> list[dict]:
        """Hand out ``shards`` to ``actors`` (one running and one queued per actor) until all are written.

        A worker that is lost (its process or node died, or it stopped answering) is dropped: its shards go back
        to the front of the queue for the live workers, and a replacement is started, which joins when it is
        ready within ``start_timeout_s`` (where the cluster has room). The run fails, in one line and with every
        finished shard kept, when a shard was lost with ``max_restarts + 1`` workers, when no worker is left, or
        on an error inside the work itself.
        """
        from tqdm.auto import tqdm

        d = _Dispatch(ray, self, actors, shards, boxed_work)
        bar = tqdm(total=len(shards), unit="shard", disable=not progress, desc=f"{what} on {len(actors)} Ray workers",
                   dynamic_ncols=True)
        try:
            d.run(bar)
        finally:
            bar.close()
            for actor, _ in d.starting.values():  # replacements not needed any more (or still without room)
                ray.kill(actor, no_restart=True)
            if _POOL.get("actors") is not None:
                _POOL["actors"] = [a for a in _POOL["actors"] if a not in set(actors) - set(d.live)] + \
                    [a for a in d.live if a not in actors]
        return d.receipts


class _Dispatch:
    """The state of one :meth:`RayExecutor._dispatch`: the queue, the shards in flight, the live workers and the
    replacements starting."""

    def __init__(self, ray, executor, actors, shards: list[int], boxed_work: list):
        self.ray, self.executor, self.boxed_work = ray, executor, boxed_work
        self.c = executor.compute
        self.threads = self.c.threads_per_worker or _driver_threads()
        self.queue = deque(shards)
        self.inflight: dict = {}  # ref -> (actor, shard)
        self.starting: dict = {}  # ready ref of a replacement -> (actor, deadline)
        self.live = list(actors)
        self.lost_by_shard: dict[int, int] = {}
        self.receipts: list[dict] = []
        self.restarts = 0

    def submit(self, actor) -> None:
        if self.queue:
            s = self.queue.popleft()
            self.inflight[actor.run.remote(self.boxed_work, s)] = (actor, s)

    def fail(self, s: int, cause) -> ObjalignError:
        return ObjalignError(f"shard {s} failed on a Ray worker after {self.restarts} restart(s): {cause}; the "
                             f"{len(self.receipts)} shard(s) finished are kept, run again to compute the rest")

    def lose(self, actor, s: int, exc) -> None:
        """A worker died under shard ``s``: the shard goes back to the queue and a replacement starts."""
        self.lost_by_shard[s] = self.lost_by_shard.get(s, 0) + 1
        if self.lost_by_shard[s] > self.c.max_restarts:
            raise self.fail(s, _ray_cause(exc))
        self.queue.appendleft(s)
        if actor in self.live:  # its other shard, if any, fails too and comes back by itself
            self.live.remove(actor)
            self.ray.kill(actor, no_restart=True)
            new = self.executor._actor_class(self.ray).remote(self.threads)
            self.starting[new.ready.remote()] = (new, time.monotonic() + self.c.start_timeout_s)
            self.restarts += 1
        if not self.live and not self.starting:
            raise self.fail(s, _ray_cause(exc))

    def expire(self, now: float) -> None:
        """Replacements without room in time are given up: the live workers carry on without them."""
        for ref, (actor, deadline) in list(self.starting.items()):
            if deadline <= now:
                del self.starting[ref]
                self.ray.kill(actor, no_restart=True)
        if not self.inflight and not self.live and not self.starting:
            raise self.fail(self.queue[0], "no Ray worker is left (a replacement found no room within "
                                           f"{self.c.start_timeout_s:g} s, compute.start_timeout_s)")

    def started(self, ref) -> None:
        actor, _ = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayError:
            self.ray.kill(actor, no_restart=True)
            if not self.live and not self.starting and not self.inflight and self.queue:
                raise self.fail(self.queue[0], "no Ray worker is left (a replacement failed to start)") from None
            return
        self.live.append(actor)
        self.submit(actor)
        self.submit(actor)

    def finished(self, ref, bar) -> None:
        actor, s = self.inflight.pop(ref)
        try:
            got = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            if _worker_lost(self.ray, exc):
                self.lose(actor, s, exc)
                return
            cause = _ray_cause(exc)
            if isinstance(cause, ObjalignError):
                raise cause from None
            raise self.fail(s, cause) from None
        self.receipts.extend(got)
        bar.update(1)
        if actor in self.live:
            self.submit(actor)

    def run(self, bar) -> None:
        for a in self.live:  # one running, one queued behind it: no idle gap between shards
            self.submit(a)
            self.submit(a)
        while self.inflight or self.queue:
            now = time.monotonic()
            self.expire(now)
            wait_s = min([10.0] + [max(0.05, d - now) for _, d in self.starting.values()])
            ready, _ = self.ray.wait(list(self.inflight) + list(self.starting), num_returns=1, timeout=wait_s)
            for ref in ready:
                if ref in self.starting:
                    self.started(ref)
                else:
                    self.finished(ref, bar)
            for actor in self.live:  # a live worker left idle while shards came back to the queue
                while self.queue and sum(1 for a, _ in self.inflight.values() if a is actor) < 2:
                    self.submit(actor)


def _worker_lost(ray, exc) -> bool:
    """Whether a Ray error means the worker (its process, its node) is gone, not that the work failed in it."""
    e = ray.exceptions
    return isinstance(exc, (e.RayActorError, e.WorkerCrashedError, e.NodeDiedError, e.LocalRayletDiedError,
                            e.ObjectLostError))


def _driver_threads() -> int:
    """The intra-op thread count a local run in this process uses (torch's, else the cores)."""

    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    return os.cpu_count() or 1


def _ray_cause(exc):
    """The user's exception inside a Ray error, or its first line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, Exception):
        return cause
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _probe(address: str, timeout: float) -> None:
    """Fail in ``timeout`` seconds, with one line, if nothing listens at ``address`` (Ray itself would retry for
    minutes). ``auto`` is left to Ray, which answers at once when no cluster runs here."""

    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ObjalignError(f"compute.ray_address = {address!r}: expected 'auto', 'host:port' or 'ray://host:port'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ObjalignError(f"compute.ray_address = {address!r}: no Ray cluster answered within {timeout:g} s "
                            f"({exc.strerror or type(exc).__name__}); start the head with `ray start --head` and "
                            "pass the address it prints, or use ray_address: null for a private Ray") from None
