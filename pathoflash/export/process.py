"""Run a writer in its own Python process, so that it shares no GIL with the other exports.

The exports of a slide are written concurrently in threads. Threads that call into C code release the GIL
and need it back when the call returns; beside a thread busy in Python (the GeoJSON's) each such return
waits up to ``sys.getswitchinterval()`` (5 ms). The TIFF needs it back thousands of times (every tile it
deflates and writes), so beside the GeoJSON it took three to five times as long as alone (this 2-core box,
2026-11-26). In a :class:`WriterProcess` a writer has a GIL of its own.

A :class:`WriterProcess` is a plain ``python`` subprocess (not ``multiprocessing``: a Dask worker process is
daemonic and may not have those children, and nothing of the parent, CUDA included, is forked or re-imported)
started ahead of time, so its interpreter start and imports (~0.5 s) are paid while the model runs. It runs
module-level functions on pickled arguments, one call at a time: the caller sends ``(function, args,
kwargs)`` down its stdin and reads the pickled result, or the exception, from its stdout.

* An exception raised by the function is re-raised in the caller, same type and message (its traceback in
  the child is logged at DEBUG); if the process dies, the caller gets a :class:`WriterProcessError`.
* The process ends when its stdin closes (:meth:`WriterProcess.close`, or the parent exiting in any way); it
  ignores SIGINT, so Ctrl-C interrupts the parent only, which then kills it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

#: Seconds a closed process may take to exit before it is killed.
_EXIT_WAIT = 10.0


class WriterProcessError(RuntimeError):
    """The writer process ended (or could not be reached) before it answered."""


class WriterProcess:
    """A Python subprocess that runs module-level functions on pickled arguments (see the module docstring).

    Use :meth:`start`; it gives ``None`` where no process can be started, so the caller writes in a thread
    instead. Use it as a context manager, or call :meth:`close`; an unreachable object kills its process.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self._lock = threading.Lock()
        self._stop = weakref.finalize(self, _kill, process)

    @classmethod
    def start(cls, preload: Sequence[str] = ()) -> WriterProcess | None:
        """Start a process that imports the modules ``preload`` while it waits for its first call."""
        package_root = str(Path(__file__).resolve().parents[2])  # the same pathoflash as this process's
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        # ``python -c`` puts the working directory first on sys.path: a pathoflash there (another checkout)
        # would shadow this one, so the package root takes its place.
        code = (
            f"import sys; sys.path[0] = {package_root!r}; "
            f"from pathoflash.export.process import serve; serve({list(preload)!r})"
        )
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
            )
        except OSError as exc:
            log.warning("could not start a writer process (%s); writing in a thread instead", exc)
            return None
        return cls(process)

    def call(self, function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` in the process; returns its result or raises its exception."""
        with self._lock:
            stdin, stdout = self._process.stdin, self._process.stdout
            assert stdin is not None and stdout is not None
            try:
                pickle.dump((function, args, kwargs), stdin, protocol=pickle.HIGHEST_PROTOCOL)
                stdin.flush()
                ok, value, child_traceback = pickle.load(stdout)
            except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
                try:
                    code: int | None = self._process.wait(1.0)  # a process that died exits at once
                except subprocess.TimeoutExpired:
                    code = None
                state = "is unreachable" if code is None else f"exited with code {code}"
                raise WriterProcessError(
                    f"the writer process for {getattr(function, '__name__', function)} {state} "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
        if ok:
            return value
        log.debug("in the writer process:\n%s", child_traceback)
        raise value

    def close(self, *, kill: bool = False, wait: bool = True) -> None:
        """End the process: let it finish and exit, or kill it now (``kill``).

        With ``wait=False`` this returns at once and a daemon thread reaps the process: its calls have all
        answered, so nothing waits on the interpreter's shutdown (0.1–0.3 s of a slide's tail otherwise).
        """
        process = self._process
        if kill:
            self._stop()
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # the process exits when its stdin ends
        if wait:
            self._reap()
        else:
            threading.Thread(target=self._reap, name="writer-reaper", daemon=True).start()

    def _reap(self) -> None:
        try:
            self._process.wait(_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            log.warning("the writer process did not exit in %.0f s; killing it", _EXIT_WAIT)
        self._stop()

    def __enter__(self) -> WriterProcess:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(kill=exc_type is not None)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` if it still runs, reap it and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def serve(preload: Sequence[str] = ()) -> None:
    """The child's loop (see the module docstring): answer calls from stdin on stdout until stdin ends."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers: IO[bytes] = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else writes to stdout lands on stderr, not in the answers
    sys.stdout = sys.stderr
    calls = sys.stdin.buffer
    for name in preload:
        with contextlib.suppress(ImportError):  # the call that needs it fails with its own message
            importlib.import_module(name)
    while True:
        try:
            function, args, kwargs = pickle.load(calls)
        except EOFError:
            return
        answer: tuple[bool, Any, str | None]
        try:
            answer = (True, function(*args, **kwargs), None)
        except BaseException as exc:  # every failure goes back to the caller, which raises it
            answer = (False, exc, traceback.format_exc())
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # what does not pickle goes back as a message
            ok, value, child_traceback = answer
            message = f"{type(value).__name__}: {value}" if not ok else f"its result does not pickle: {exc}"
            data = pickle.dumps(
                (False, RuntimeError(message), child_traceback), protocol=pickle.HIGHEST_PROTOCOL
            )
        answers.write(data)
        answers.flush()


__all__ = ["WriterProcess", "WriterProcessError", "serve"]
