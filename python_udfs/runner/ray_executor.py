"""The ``ray`` executor: a step's parts computed by Ray actors, on this machine or a cluster.

One actor per worker (per GPU for a step that uses an accelerator, when the cluster has
GPUs; otherwise one per CPU worker) builds the step's worker once (``build_worker``: the
model loads once) and then computes many parts with ``compute_part``, the same atomic,
fingerprinted writer the local executor uses. So a part written on Ray is reused by a local
run and the reverse, and a Ray run killed midway resumes like a local one: finished parts
stay, half-written ones never become part files.

- ``address`` (dbt var ``ray_address``, ``--ray-address``): join an existing cluster
  (``ray start --head`` on a node, ``ray://host:10001`` or KubeRay's service). Empty: start
  a local Ray with ``workers`` CPUs on this machine, without a dashboard unless
  ``dashboard`` is set (then on 127.0.0.1 only); it is shut down when the process exits.
  Ray's own gRPC ports (GCS, raylet, workers) listen on the node's address, as Ray requires,
  behind Ray's token authentication (on by default in this Ray); logs stay in
  /tmp/ray/session_*/logs and are forwarded to this process's stderr.
- Parts are files: on a cluster, the lake must be on a file system every node mounts at
  the same path; actors start in the driver's working directory.
- ``workers`` (``ray_workers``): actors per step; empty = the cluster's CPUs (or GPUs for
  an accelerator step).
- A worker that dies (killed, out of memory, a node lost) is restarted by Ray and its part
  is retried (``retries`` times); a part that raises raises ``PartFailed`` on the driver,
  naming the part, exactly as locally.
- At most ``in_flight`` parts per actor are handed out at once, so the driver never holds
  a Pile-sized input, and results come back (small ``PartResult``s) as parts finish, in any
  order; ``run_step`` advances the one progress bar.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterable, Iterator

from python_udfs.runner.executors import EXECUTORS, PartFailed, PartResult, build_worker, compute_part
from python_udfs.runner.step import Part, Step

try:
    import ray
except ImportError as err:  # get_executor turns this into "executor 'ray' is not available here"
    raise ImportError(f"Ray is not installed ({err}); pip install 'ray[data]'") from err

#: Environment the actors need (offline hubs, thread counts, pilehouse's own settings).
_FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "PILEHOUSE_DB", "PILEHOUSE_LAKE",
                  "PILEHOUSE_THREADS", "PYTHONHASHSEED")

_started_here: dict[str, object] = {}  # the local Ray this process started: {"cpus": n}
_lock = threading.Lock()  # dbt runs Python models on several threads: one ray.init at a time


def _runtime_env() -> dict:
    env = {name: os.environ[name] for name in _FORWARDED_ENV if name in os.environ}
    pythonpath = os.pathsep.join(p for p in [os.getcwd(), os.environ.get("PYTHONPATH", "")] if p)
    env["PYTHONPATH"] = pythonpath
    # one progress bar per step, the driver's: no model-loading bars from every actor
    env.update(TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    return {"env_vars": env}


def ensure_ray(address: str | None = None, cpus: int | None = None, dashboard: bool = False) -> None:
    """Connect to ``address``, or start a local Ray with ``cpus`` CPUs (no dashboard unless asked).

    A local Ray this process started with a different CPU count is restarted; one started
    elsewhere in the process (``ray.init`` by the user) is used as it is.
    """
    with _lock:
        _ensure_ray(address, cpus, dashboard)


def _ensure_ray(address: str | None, cpus: int | None, dashboard: bool) -> None:
    if ray.is_initialized():
        wanted = _started_here.get("cpus")
        if address or wanted is None or cpus is None or wanted == cpus:
            return
        ray.shutdown()  # our own local Ray, asked for another size
        _started_here.clear()
    common = dict(runtime_env=_runtime_env(), log_to_driver=True, configure_logging=True,
                  logging_level="WARNING", ignore_reinit_error=True)
    if address:
        try:  # `ray start --head` made a token (~/.ray/auth_token): use it, as `ray` commands do
            from ray._private.authentication.authentication_token_setup import (
                maybe_enable_token_auth_if_token_available,
            )

            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        except ImportError:  # another Ray version: RAY_AUTH_MODE=token does the same
            pass
        try:
            ray.init(address=address, **common)
        except ConnectionError as err:
            raise ConnectionError(
                f"cannot join the Ray cluster at ray_address={address!r}: is `ray start --head` running there, "
                "and is its token here (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH, RAY_AUTH_MODE=token)? "
                f"({err})") from err
        return
    cpus = cpus or os.cpu_count() or 1
    ray.init(num_cpus=cpus, include_dashboard=bool(dashboard), dashboard_host="127.0.0.1", **common)
    _started_here["cpus"] = cpus
    atexit.register(shutdown)


def shutdown() -> None:
    """Stop the local Ray this process started (a joined cluster is only disconnected)."""
    if ray.is_initialized():
        ray.shutdown()
    _started_here.clear()


@ray.remote
class PartActor:
    """Builds the step's worker once, then computes parts (``compute_part``) one at a time."""

    def __init__(self, step: Step, cwd: str) -> None:
        if os.path.isdir(cwd):  # relative lake paths mean the same files as on the driver
            os.chdir(cwd)
        self.step = step
        self.worker = None

    def pid(self) -> int:
        return os.getpid()

    def compute(self, part: Part, fingerprint: str) -> PartResult:
        if self.worker is None:
            self.worker = build_worker(self.step, part)
        return compute_part(self.worker, self.step, part, fingerprint)


class RayExecutor:
    """Ray actors compute and write the parts; see the module docstring."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, retries: int = 3,
                 in_flight: int = 2, dashboard: bool = False) -> None:
        self.address = address or None
        self.workers = int(workers) if workers not in (None, "") else None
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"ray_workers must be at least 1, not {workers}")
        self.retries, self.in_flight, self.dashboard = int(retries), max(1, int(in_flight)), dashboard
        self.actors: list = []

    # -- actors ---------------------------------------------------------------------------
    def _start_actors(self, step: Step) -> list:
        ensure_ray(self.address, self.workers, self.dashboard)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        options = dict(max_restarts=self.retries, max_task_retries=self.retries)
        if getattr(step, "accelerator", False) and gpus:
            count = min(self.workers or gpus, gpus)
            options.update(num_gpus=1, num_cpus=1)
        else:
            count = self.workers or max(1, int(resources.get("CPU", 1)))
            options.update(num_cpus=1)
        cwd = os.getcwd()  # the step travels inline (small): a restarted actor gets it again
        self.actors = [PartActor.options(**options).remote(step, cwd) for _ in range(count)]
        return self.actors

    def worker_pids(self) -> list[int]:
        """The actors' process ids (tests kill one to check a run survives it)."""
        return ray.get([actor.pid.remote() for actor in self.actors])

    # -- the Executor interface -----------------------------------------------------------
    def run(self, step: Step, todo: Iterable[tuple[Part, str]]) -> Iterator[PartResult]:
        source = iter(todo)
        first = next(source, None)
        if first is None:  # every part is on disk: start nothing
            return
        actors = self._start_actors(step)
        load = {i: 0 for i in range(len(actors))}
        running: dict = {}  # ObjectRef -> (actor index, part)
        pending = [first]
        exhausted = False
        failure: PartFailed | None = None
        try:
            while True:
                # hand out parts while some actor has room (the least loaded first)
                while not exhausted:
                    slot = min(load, key=load.get)
                    if load[slot] >= self.in_flight:
                        break
                    item = pending.pop() if pending else next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    part, fingerprint = item
                    ref = actors[slot].compute.remote(part, fingerprint)
                    running[ref] = (slot, part)
                    load[slot] += 1
                if not running:
                    break
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    slot, part = running.pop(ref)
                    load[slot] -= 1
                    try:
                        result = self._result(step, part, ref)
                    except PartFailed as err:  # hand out nothing more; let the parts in flight finish
                        failure, exhausted = failure or err, True
                        continue
                    yield result
            if failure is not None:
                raise failure
        finally:
            for ref in running:  # the driver stopped early (an error, Ctrl-C): don't wait for these
                ray.cancel(ref, force=False)
            self.close()

    def _result(self, step: Step, part: Part, ref) -> PartResult:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = err.cause
            if isinstance(cause, PartFailed):
                raise PartFailed(cause.step, cause.index, cause.path, cause.reason) from None
            raise PartFailed(step.name, part.index, step.part_path(part.index), f"{type(cause).__name__}: {cause}") \
                from err
        except ray.exceptions.RayActorError as err:  # died more often than Ray would restart it
            raise PartFailed(step.name, part.index, step.part_path(part.index),
                             f"the Ray worker died {self.retries + 1} times: {err}") from err

    def close(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # already gone
                pass
        self.actors = []


EXECUTORS["ray"] = RayExecutor
