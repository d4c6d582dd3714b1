"""A model worker process: one runtime, loaded and served over pipes for
:class:`pitstop.runtimes.isolated.IsolatedRuntime`. Run as ``python -m pitstop.runtimes.worker``.

Contract with the server (frames as in :mod:`pitstop.runtimes.frames`):

- stdin and stdout carry frames; the worker moves them to private descriptors at once and points
  fd 1 at stderr, so a handler's ``print()`` lands in the server's log, not in the protocol.
- The first frame is ``load``: the worker applies the memory limit (``RLIMIT_AS``), builds the
  runtime with ``resolve_runtime(name)(context)``, loads it and answers with its metadata, or
  with the error and exits 1. Decoupled models are refused (they answer through
  ``responses()``, which does not cross a pipe).
- Then each ``predict`` frame is answered with the outputs or the error (the worker stays up),
  until a ``stop`` frame or the end of stdin: it unloads the runtime and exits 0.
- A MemoryError anywhere in a request is answered with ``{"fatal": "memory"}`` and the worker
  exits with :data:`~pitstop.runtimes.frames.EXIT_OUT_OF_MEMORY`: its heap may be unusable.
- On Linux it asks to be SIGKILLed when the thread that started it ends
  (``PR_SET_PDEATHSIG``), and exits at once if that parent is already gone
  (``PITSTOP_WORKER_PARENT`` holds its pid).
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence
from typing import Final

from pitstop.errors import LoadError, NotIsolatable
from pitstop.runtimes.base import Runtime, resolve_runtime
from pitstop.runtimes.frames import (
    EXIT_OUT_OF_MEMORY,
    PARENT_ENV,
    Buffer,
    ChannelClosed,
    FrameReader,
    Header,
    context_from_json,
    decode_arrays,
    encode_arrays,
    error_header,
    metadata_to_json,
    write_frame,
)

_PR_SET_PDEATHSIG: Final = 1

log = logging.getLogger("pitstop.runtimes.worker")


def main() -> int:
    """The worker's life; returns its exit code."""
    logging.basicConfig(
        level=logging.INFO, format=f"pitstop worker {os.getpid()}: %(levelname)s %(message)s"
    )
    requests, answers = _take_stdio()
    if not _die_with_parent():
        return 1
    reader = FrameReader(requests)
    try:
        header, _ = reader.read(None)
    except ChannelClosed:
        return 0
    try:
        runtime = _load(header)
    except MemoryError:
        _answer(answers, {"ok": False, "fatal": "memory"})
        return EXIT_OUT_OF_MEMORY
    except Exception as exc:
        log.warning("loading failed: %s", exc, exc_info=not isinstance(exc, LoadError))
        _answer(answers, {"ok": False, "error": error_header(exc)})
        return 1
    if not _answer(answers, {"ok": True, "metadata": metadata_to_json(runtime.metadata())}):
        return 0
    code = _serve(runtime, reader, answers)
    if code == 0:
        try:
            runtime.unload()
        except Exception:
            log.exception("unloading the model failed")
    return code


def _take_stdio() -> tuple[int, int]:
    """Private copies of stdin and stdout for frames; fd 0 becomes /dev/null, fd 1 stderr."""
    requests = os.dup(0)
    answers = os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return requests, answers


def _die_with_parent() -> bool:
    """Ask for SIGKILL when the parent goes; False when it is already gone."""
    if sys.platform == "linux":
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            log.warning("cannot ask to die with the server (prctl unavailable)")
    expected = os.environ.get(PARENT_ENV)
    return expected is None or str(os.getppid()) == expected


def _load(header: Header) -> Runtime:
    limit = header.get("memory_limit_bytes")
    if limit is not None:
        _limit_memory(int(limit))
    runtime = resolve_runtime(str(header["runtime"]))(context_from_json(header))
    runtime.load()
    if runtime.metadata().decoupled:
        runtime.unload()
        raise NotIsolatable("decoupled models cannot run isolated")
    return runtime


def _limit_memory(limit: int) -> None:
    """Cap the address space at ``limit`` bytes; a limit below what the interpreter already
    maps could never load anything, so it is a LoadError."""
    mapped = _vm_size()
    if mapped is not None and mapped >= limit:
        raise LoadError(
            f"memory limit {limit / 2**20:g} MiB is below the worker's own address space "
            f"({mapped / 2**20:.0f} MiB before loading the model)"
        )
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _serve(runtime: Runtime, reader: FrameReader, answers: int) -> int:
    """Answer predict frames until stop or end of input; the exit code."""
    while True:
        try:
            header, payload = reader.read(None)
        except ChannelClosed:
            return 0
        op = header.get("op")
        if op == "stop":
            return 0
        if op != "predict":
            log.error("unknown request %r; exiting", op)
            return 1
        out_of_memory = False
        try:
            entries, buffers = encode_arrays(
                runtime.predict(decode_arrays(header["tensors"], payload))
            )
        except MemoryError:
            # Answered outside the handler: the traceback (and whatever its frames hold) is
            # released first, so there is room to write the answer.
            out_of_memory = True
        except Exception as exc:
            log.warning("predict failed: %s: %s", type(exc).__name__, exc, exc_info=True)
            if not _answer(answers, {"ok": False, "error": error_header(exc)}):
                return 0
            continue
        if out_of_memory:
            log.error("out of memory; exiting so the server starts a fresh worker")
            _answer(answers, {"ok": False, "fatal": "memory"})
            return EXIT_OUT_OF_MEMORY
        if not _answer(answers, {"ok": True, "tensors": entries}, buffers):
            return 0


def _answer(fd: int, header: Header, buffers: Sequence[Buffer] = ()) -> bool:
    """Write one answer; False when the server is gone."""
    try:
        write_frame(fd, header, buffers)
    except ChannelClosed:
        return False
    return True


if __name__ == "__main__":
    try:
        code = main()
    except MemoryError:
        code = EXIT_OUT_OF_MEMORY
    sys.stderr.flush()
    os._exit(code)  # no atexit work: a worker's heap may be exhausted, and the server reaps it
