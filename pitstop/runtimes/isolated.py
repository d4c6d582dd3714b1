"""Process isolation: any runtime, run in a worker subprocess behind the same Runtime contract.

A custom handler that segfaults, aborts, leaks or hangs takes down its worker, never the
server. :class:`IsolatedRuntime` starts ``python -m pitstop.runtimes.worker``
(:mod:`pitstop.runtimes.worker`), sends it the :class:`RuntimeContext`, and forwards each
``predict`` over pipes (:mod:`pitstop.runtimes.frames`: raw array buffers, no pickle).

Contract, beyond :class:`pitstop.runtimes.base.Runtime`'s:

- One request at a time per worker: concurrent ``predict`` calls queue on a lock.
- A failure fails only the request in flight, with a server-side error, and the worker is
  replaced in the background after an exponential back-off (``restart_backoff_s`` doubling
  up to ``max_backoff_s``; back to the start once a worker stayed up
  :data:`STABLE_UPTIME_S`):

  * the worker dies (a signal, an exit): ``Unavailable("model worker died (SIGABRT);
    restarting")``;
  * it hits MemoryError (its ``RLIMIT_AS``), or is SIGKILLed while the kernel's OOM-kill count
    rose: ``Unavailable("model worker ran out of memory (limit N MiB); restarting")``;
  * it does not answer within ``call_timeout_s``: it is SIGKILLed, ``DeadlineExceeded``.

  While no worker is up, ``predict`` raises ``Unavailable("model worker restarting after
  it …")`` at once.
- Errors the model raises while the worker stays up come back as the in-process runtime
  raises them: pitstop errors as the same class (``InvalidInput`` stays a 400), builtin
  exceptions rebuilt (``KeyError('x')``), others as ``RuntimeError("Type: message")``; the
  server wraps non-pitstop ones into ``InternalError`` as it does in process.
- Decoupled models (``responses()``) cannot run isolated: ``load()`` raises LoadError.
- ``python`` may name another interpreter (a per-model virtualenv's); pitstop and its
  dependencies (numpy, orjson) must be importable there, at a version speaking the same frames.
- Workers get ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to
  ``context.threads`` unless the server's environment sets them.
- Workers are started from one long-lived thread, because on Linux a worker asks to be killed
  when the *thread* that started it ends (``PR_SET_PDEATHSIG``); ``unload()`` stops, kills and
  reaps the worker and stops any restart in progress.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import numpy as np

from pitstop.errors import (
    DeadlineExceeded,
    LoadError,
    NotIsolatable,
    PitstopError,
    Unavailable,
)
from pitstop.runtimes.base import RuntimeContext, RuntimeMetadata
from pitstop.runtimes.frames import (
    EXIT_OUT_OF_MEMORY,
    PARENT_ENV,
    Buffer,
    ChannelClosed,
    ChannelTimeout,
    FrameReader,
    Header,
    context_to_json,
    decode_arrays,
    encode_arrays,
    error_from_header,
    metadata_from_json,
    write_frame,
)

LOAD_TIMEOUT_S: Final = 300.0
"""How long a worker may take to start and load its model."""
STABLE_UPTIME_S: Final = 60.0
"""A worker that stayed up this long resets the restart back-off."""
STOP_GRACE_S: Final = 2.0
"""How long a worker may take to exit (asked to stop, or after closing its pipe)."""

WORKER_MODULE: Final = "pitstop.runtimes.worker"
_THREAD_VARIABLES: Final = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

log = logging.getLogger(__name__)


def restart_delay(previous: float | None, uptime_s: float, base: float, most: float) -> float:
    """Seconds to wait before the next restart: ``base`` for a first failure or one after
    :data:`STABLE_UPTIME_S` of uptime, else twice ``previous``, at most ``most``."""
    if previous is None or uptime_s >= STABLE_UPTIME_S:
        return min(base, most)
    return min(previous * 2, most)


class IsolatedRuntime:
    """``runtime_name`` run in a worker subprocess; see the module docstring for the contract.

    Construction is cheap and does no I/O. ``memory_limit_bytes`` caps the worker's address
    space (``RLIMIT_AS``, so it counts virtual memory); ``call_timeout_s`` bounds each predict;
    ``python`` is the interpreter (default: the server's)."""

    def __init__(
        self,
        runtime_name: str,
        context: RuntimeContext,
        *,
        memory_limit_bytes: int | None = None,
        call_timeout_s: float = 30.0,
        python: str | None = None,
        restart_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._runtime_name = runtime_name
        self._context = context
        self._memory_limit = memory_limit_bytes
        self._call_timeout_s = call_timeout_s
        self._python = python or sys.executable
        self._backoff = (restart_backoff_s, max_backoff_s)
        self._call_lock = threading.Lock()  # one request at a time on the worker
        self._state = threading.Condition()  # guards every field below
        self._worker: _Worker | None = None
        self._starting: _Worker | None = None
        self._metadata: RuntimeMetadata | None = None
        self._loaded = False
        self._stop = threading.Event()
        self._restarter: threading.Thread | None = None
        self._delay: float | None = None
        self._restarts = 0
        self._last_failure: str | None = None

    def load(self) -> None:
        self._stop.clear()
        worker = self._start()
        with self._state:
            self._worker = worker
            self._metadata = worker.metadata
            self._loaded = True
            self._state.notify_all()

    def metadata(self) -> RuntimeMetadata:
        metadata = self._metadata
        if metadata is None:
            raise Unavailable("the isolated model is not loaded")
        return metadata

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._ready_worker()  # fail fast while restarting, without queueing on the lock
        entries, buffers = encode_arrays(inputs)
        request: Header = {"op": "predict", "tensors": entries}
        with self._call_lock:
            worker = self._ready_worker()
            try:
                answer, payload = worker.call(request, buffers, self._call_timeout_s)
            except ChannelTimeout:
                worker.end(0.0)
                what = f"did not answer within {self._call_timeout_s:g} s"
                raise self._failed(worker, what, DeadlineExceeded) from None
            except ChannelClosed:
                worker.end(STOP_GRACE_S)
                raise self._failed(worker, self._ending(worker)) from None
            except BaseException as exc:  # the answer may still come: the pipe is out of step
                worker.end(0.0)
                self._failed(worker, f"was abandoned mid-request ({type(exc).__name__})")
                raise
            if not answer.get("ok"):
                if answer.get("fatal") == "memory":
                    worker.end(STOP_GRACE_S)
                    raise self._failed(worker, self._out_of_memory())
                raise error_from_header(answer["error"])
        return decode_arrays(answer["tensors"], payload)

    def unload(self) -> None:
        with self._state:
            self._loaded = False
            self._stop.set()
            worker, self._worker = self._worker, None
            starting, restarter = self._starting, self._restarter
            self._metadata = None
            self._state.notify_all()
        if starting is not None:
            starting.interrupt()  # its restart thread sees the pipe close and gives up
        if restarter is not None:
            restarter.join(STOP_GRACE_S * 2)
        if worker is None:
            return
        if self._call_lock.acquire(timeout=STOP_GRACE_S):
            try:
                worker.stop(STOP_GRACE_S)
            finally:
                self._call_lock.release()
        else:  # a predict is still in flight (against the contract): end it
            worker.interrupt()

    @property
    def restarts(self) -> int:
        """Workers started to replace one that failed (and that loaded)."""
        return self._restarts

    @property
    def last_failure(self) -> str | None:
        """The last failure, e.g. ``"died (SIGABRT) at 12:00:01"``; None when there was none."""
        return self._last_failure

    @property
    def pid(self) -> int | None:
        """The serving worker's process id; None while none is up."""
        worker = self._worker
        return None if worker is None else worker.process.pid

    def memory_bytes(self) -> int | None:
        """The serving worker's resident memory (VmRSS), or None when unknown or no worker."""
        pid = self.pid
        return None if pid is None else _resident_bytes(pid)

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a worker to be up; whether one is."""
        with self._state:
            self._state.wait_for(lambda: self._worker is not None or not self._loaded, timeout)
            return self._worker is not None

    def _ready_worker(self) -> _Worker:
        with self._state:
            if self._worker is not None:
                return self._worker
            if not self._loaded:
                raise Unavailable("the isolated model is not loaded")
            raise Unavailable(f"model worker restarting after it {self._last_failure}")

    def _start(self) -> _Worker:
        """A new worker with the model loaded; raises the worker's load error."""
        request = context_to_json(self._runtime_name, self._context, self._memory_limit)
        worker = _Worker(_spawn([self._python, "-m", WORKER_MODULE], self._environment()))
        with self._state:
            self._starting = worker
            stopped = self._stop.is_set()
        try:
            if stopped:
                raise LoadError("the model is being unloaded")
            try:
                answer, _ = worker.call(request, (), LOAD_TIMEOUT_S)
            except ChannelTimeout:
                raise LoadError(f"model worker did not load within {LOAD_TIMEOUT_S:g} s") from None
            except ChannelClosed:
                worker.end(STOP_GRACE_S)
                raise LoadError(f"model worker {self._ending(worker)} while loading") from None
            if not answer.get("ok"):
                worker.end(STOP_GRACE_S)
                if answer.get("fatal") == "memory":
                    raise LoadError(f"model worker {self._out_of_memory()} while loading")
                raise error_from_header(answer["error"])
            metadata = metadata_from_json(answer["metadata"])
            if metadata.decoupled:
                raise NotIsolatable("decoupled models cannot run isolated")
        except BaseException:
            worker.end(0.0)
            raise
        finally:
            with self._state:
                self._starting = None
        worker.metadata = metadata
        worker.ready_at = time.monotonic()
        return worker

    def _environment(self) -> dict[str, str]:
        """The server's environment without the server's own credentials (its settings,
        admin token, registry URL, S3 and MLflow credentials): user code in a worker has no
        business with them."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(SERVER_ONLY_PREFIXES)}
        env[PARENT_ENV] = str(os.getpid())
        for name in _THREAD_VARIABLES:
            env.setdefault(name, str(self._context.threads))
        return env

    def _failed(
        self, worker: _Worker, what: str, kind: type[PitstopError] = Unavailable
    ) -> PitstopError:
        """Record ``worker``'s failure, schedule its replacement; the error for the request."""
        with self._state:
            restarting = not self._stop.is_set()
            if self._worker is worker:
                self._worker = None
                self._last_failure = f"{what} at {time.strftime('%H:%M:%S')}"
                if restarting:
                    uptime = time.monotonic() - worker.ready_at
                    self._delay = restart_delay(self._delay, uptime, *self._backoff)
                    self._restarter = threading.Thread(
                        target=self._restart,
                        args=(self._delay,),
                        name=f"pitstop-restart-{self._runtime_name}",
                        daemon=True,
                    )
                    self._restarter.start()
            self._state.notify_all()
        log.warning("model worker %d %s", worker.process.pid, what)
        return kind(f"model worker {what}; {'restarting' if restarting else 'unloading'}")

    def _restart(self, delay: float) -> None:
        """The restart thread: wait ``delay``, start a worker, retry with back-off on failure,
        give up when the model is unloaded."""
        while not self._stop.wait(delay):
            try:
                worker = self._start()
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("restarting the model worker failed: %s", exc)
                with self._state:
                    stamp = time.strftime("%H:%M:%S")
                    self._last_failure = f"failed to restart ({exc}) at {stamp}"
                    self._delay = delay = restart_delay(self._delay, 0.0, *self._backoff)
                continue
            with self._state:
                installed = not self._stop.is_set()
                if installed:
                    self._worker = worker
                    self._restarts += 1
                    self._state.notify_all()
            if not installed:
                worker.end(0.0)
            return

    def _ending(self, worker: _Worker) -> str:
        """How a worker that closed its pipe ended, as in ``died (SIGSEGV)``."""
        code = worker.process.returncode
        if code == EXIT_OUT_OF_MEMORY or worker.oom_killed():
            return self._out_of_memory()
        if code is not None and code < 0:
            try:
                return f"died ({signal.Signals(-code).name})"
            except ValueError:
                return f"died (signal {-code})"
        return f"died (exit code {code})"

    def _out_of_memory(self) -> str:
        if self._memory_limit is None:
            return "ran out of memory"
        return f"ran out of memory (limit {self._memory_limit / 2**20:g} MiB)"


class _Worker:
    """One worker process and its pipes. One thread uses it at a time (``call``, ``stop``,
    ``end``); ``interrupt`` may come from any thread."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self._requests = process.stdin.fileno()
        self._reader = FrameReader(process.stdout.fileno())
        self._oom_kills = _oom_kills()
        self.metadata: RuntimeMetadata | None = None
        self.ready_at = time.monotonic()

    def call(
        self, request: Header, buffers: Sequence[Buffer], timeout_s: float
    ) -> tuple[Header, memoryview]:
        """Send ``request`` and read the answer within ``timeout_s``; raises ChannelTimeout
        or ChannelClosed."""
        write_frame(self._requests, request, buffers)
        return self._reader.read(time.monotonic() + timeout_s)

    def stop(self, grace_s: float) -> None:
        """Ask the worker to exit, then :meth:`end` it."""
        with contextlib.suppress(ChannelClosed):
            write_frame(self._requests, {"op": "stop"})
        self.end(grace_s)

    def end(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for the worker to exit, SIGKILL it if it has not, reap it and
        close its pipes."""
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.interrupt()
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def interrupt(self) -> None:
        """SIGKILL the worker unless it already exited (it is reaped by :meth:`end`)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    def oom_killed(self) -> bool:
        """Whether the worker was SIGKILLed while the kernel OOM-killed some process: the
        kernel's count is system-wide, so this is a (good) guess."""
        if self.process.returncode != -signal.SIGKILL:
            return False
        before, after = self._oom_kills, _oom_kills()
        return before is not None and after is not None and after > before


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


SERVER_ONLY_PREFIXES = ("PITSTOP_", "AWS_", "MLFLOW_TRACKING_")
"""Environment variables a worker does not inherit."""


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a worker from the one spawner thread, which lives as long as the server (see the
    module docstring: a worker dies with the thread that started it)."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(1, thread_name_prefix="pitstop-worker-spawner")
        spawner = _spawner
    pipe = subprocess.PIPE
    future = spawner.submit(
        subprocess.Popen, argv, stdin=pipe, stdout=pipe, bufsize=0, env=env, close_fds=True
    )
    return future.result()


def _oom_kills() -> int | None:
    """The kernel's count of OOM kills since boot (``/proc/vmstat``), or None."""
    try:
        with open("/proc/vmstat", encoding="ascii") as vmstat:
            for line in vmstat:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _resident_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
