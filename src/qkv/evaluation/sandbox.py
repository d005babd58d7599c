"""Running model-written code: each program in a fresh, limited, disposable process, never in qkv's own.

A code benchmark scores a model by running what it wrote against tests (HumanEval: the prompt plus the completion
is the program, and ``check(entry_point)`` the test). That code is untrusted: it may loop forever, allocate
10 GB, fork until the machine stalls, print gigabytes, delete files or open sockets, by accident far more often
than by design. So a program runs behind layers, each a backstop for the ones before:

1. **A fresh interpreter**: ``python -I -S -u -c HARNESS`` per program: isolated mode (no environment variables,
   no user site, not the script's directory on sys.path) and no site-packages, so only the standard library
   imports: not qkv, not numpy. Its working directory is a new temporary directory, removed afterwards; its
   environment is empty; its stdin carries the program, the tests and a random nonce, is read to the end and
   replaced by /dev/null before any model code runs.
2. **Namespaces** (when ``unshare`` from util-linux may create them unprivileged here, probed once): a new user
   and network namespace (no interface but a downed loopback: no network at all), and where it works a PID
   namespace with its own /proc, so the program sees no other process and its whole tree dies with it.
3. **Its own process group** (``start_new_session``): on the wall-clock timeout, and after every run, qkv kills
   the whole group with SIGKILL before reaping it, so a stray child cannot outlive the program.
4. **Resource limits**, set in the child before the program runs: CPU seconds (RLIMIT_CPU: SIGXCPU, SIGKILL a
   second later), address space (RLIMIT_AS: a big allocation raises MemoryError), file size (RLIMIT_FSIZE: the
   largest file it may write, its captured output included; SIGXFSZ is ignored, so an oversized write fails
   with an OSError the program sees), no core files, and RLIMIT_NPROC. The kernel does not enforce RLIMIT_NPROC
   for root (nor in a user namespace mapped to root), so when qkv runs as root the guard and the process-group
   kill are what stop a fork bomb.
5. **A guard** (as OpenAI human-eval's ``reliability_guard``), installed in the child after the limits and before
   the program: the calls that destroy or escape (os.system, fork, kill, exec*, spawn*, remove, rmdir, rename,
   chmod, chown, putenv, setuid, ...; subprocess's fork_exec, shutil.rmtree/move/chown, sockets, exit) raise
   ``SandboxViolation``, and ``ctypes``, ``resource``, ``psutil`` and a few more cannot be imported. It is not
   an OSError on purpose: code that catches OSError and falls back (shutil.move copies, then deletes) stops at
   once. The guard is defence in depth, not a security boundary: Python can be talked out of it, and it does not
   stop ``open(path, "w")`` on a file the user may write. Code that is hostile by design needs a container or VM.

Inside the child a small harness runs: a supervisor that forks one worker and waits for it, so that qkv learns
the signal that ended the worker even from inside a PID namespace. The worker sets the limits and the guard, runs
the program in a fresh namespace dict, then each test in that namespace in its own try/except, reporting one
line per step on a pipe of its own (a file descriptor passed to it alone), each line stamped with the nonce, so
that nothing the program prints is taken for a result. The program's stdout and stderr go to a file in its
directory (capped by RLIMIT_FSIZE); qkv keeps a few KB of anything it reads. An outcome:

- ``passed``: the program ran and every test finished without an exception;
- ``failed``: some test raised (AssertionError, MemoryError, ...), or the program ended early during the tests;
- ``error``: the program itself did not run to its end (SyntaxError, an exception, MemoryError at definition);
- ``timeout``: the wall clock ran out; ``killed``: a signal ended it (SIGXCPU, SIGKILL, SIGSEGV, ...).

Each program costs a process start, namespaces included: about 35 ms of one core's time for a small program and
five tests. Programs run in parallel, one per CPU core by default, each watched by a thread of qkv's waiting on its
child.
"""

from __future__ import annotations

import marshal
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from qkv.errors import QKVError

Status = Literal["passed", "failed", "error", "timeout", "killed"]


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0  # wall clock per program, process start included
    cpu_s: int = 5  # RLIMIT_CPU: CPU seconds (SIGXCPU at the limit, SIGKILL one second later)
    memory_mb: int = 1024  # RLIMIT_AS: address space of the worker process
    file_mb: int = 1  # RLIMIT_FSIZE: the largest file it may write (its captured output included)

    def __post_init__(self):
        for name in ("timeout_s", "cpu_s", "memory_mb", "file_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise QKVError(f"sandbox limit {name} must be a number above 0, got {value!r}", argument=name)


@dataclass(frozen=True)
class Outcome:
    passed: int  # tests that finished without an exception
    total: int  # tests given
    status: Status
    detail: str  # one short line: why it did not pass ("" when it passed)
    ms: float  # wall time of this program, process start to reaping
    tests: tuple[bool, ...] = field(default=(), repr=False)  # which tests passed, in order (those that ran)

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0


NPROC = 64  # RLIMIT_NPROC: counts every process and thread of the user, all sandboxes together; root: not enforced
DETAIL_CHARS = 300
_LINE_BYTES = 4096  # a result line longer than this is not one of the harness's: dropped
_TAIL_BYTES = 4096  # of the captured output, read only to explain a sandbox that never reported

# The child's side. Kept in one function so that the program, importing __main__, finds nothing but `main`.
_HARNESS = r'''
def main():
    import builtins, faulthandler, marshal, os, posix, resource, sys, _posixsubprocess, _signal, _socket

    program, tests, nonce, fd, (cpu_s, memory, file_size, nproc), guard = marshal.loads(sys.stdin.buffer.read())
    posix.close(0)
    posix.open("/dev/null", posix.O_RDONLY)  # fd 0 again: input() in the program meets end of file
    posix.set_inheritable(fd, False)
    write, exit_now, waitpid = posix.write, posix._exit, posix.waitpid  # the harness's own, kept from the guard

    def send(kind, flag="", detail=""):
        detail = " ".join(str(detail)[:1000].split())[:300]
        line = "\t".join((nonce, kind, str(flag), detail)).encode("utf-8", "backslashreplace")
        write(fd, b"\n" + line + b"\n")  # a line of its own even after a stray write without a newline

    def describe(error):
        try:
            message = str(error)[:1000]
        except BaseException:
            message = ""
        return f"{type(error).__name__}: {message}" if message else type(error).__name__

    worker = posix.fork()
    if worker:  # the supervisor: report how the worker ended, signal included
        send("exit", waitpid(worker, 0)[1])
        exit_now(0)

    for which, soft, hard in ((resource.RLIMIT_CPU, cpu_s, cpu_s + 1), (resource.RLIMIT_AS, memory, memory),
                              (resource.RLIMIT_FSIZE, file_size, file_size), (resource.RLIMIT_CORE, 0, 0),
                              (resource.RLIMIT_NPROC, nproc, nproc)):
        current = resource.getrlimit(which)[1]
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)  # an oversized write fails with EFBIG instead

    if guard:
        class SandboxViolation(Exception):
            pass

        def refuse(name):
            def refused(*args, **kwargs):
                raise SandboxViolation(f"{name} is disabled in the sandbox")
            return refused

        class NoSocket(_socket.socket):
            __slots__ = ()  # socket.socket adds __weakref__ itself

            def __init__(self, *args, **kwargs):
                raise SandboxViolation("sockets are disabled in the sandbox")

        faulthandler.disable()
        for name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "setsid", "setpgid", "setpgrp",
                     "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate",
                     "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown", "chroot", "putenv", "unsetenv",
                     "setuid", "seteuid", "setreuid", "setresuid", "setgid", "setegid", "setregid", "setresgid",
                     "setgroups", "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
                     "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
                     "posix_spawn", "posix_spawnp"):
            for module in (os, posix):
                if hasattr(module, name):
                    setattr(module, name, refuse(f"os.{name}"))
        _posixsubprocess.fork_exec = refuse("subprocess.Popen")
        _socket.socket = _socket.SocketType = NoSocket  # socket.socket, imported later, subclasses this
        _socket.socketpair = refuse("socket.socketpair")
        for name, attrs in (("shutil", ("rmtree", "move", "chown")), ("subprocess", ("Popen",)),
                            ("socket", ("socket", "create_connection", "socketpair"))):
            if sys.modules.get(name):  # imported already (not under -S): block by name too
                for attr in attrs:
                    setattr(sys.modules[name], attr, refuse(f"{name}.{attr}"))
        for name in ("exit", "quit", "help"):
            setattr(builtins, name, refuse(name))
        for name in ("ipdb", "joblib", "resource", "psutil", "tkinter", "ctypes", "_ctypes"):
            sys.modules[name] = None

    namespace = {"__name__": "__program__", "__builtins__": builtins}
    try:
        exec(compile(program, "<program>", "exec"), namespace)
    except BaseException as error:
        send("program", 0, describe(error))
        exit_now(0)
    send("program", 1)
    for number, test in enumerate(tests, 1):
        try:
            exec(compile(test, f"<test {number}>", "exec"), namespace)
        except BaseException as error:
            send("test", 0, describe(error))
        else:
            send("test", 1)
    send("done")
    exit_now(0)


main()
'''


@dataclass(frozen=True)
class _Isolation:
    prefix: tuple[str, ...]  # the unshare command the interpreter runs under, () for none
    network: bool
    pids: bool
    why_not: str  # when network is False


def _unshare_works(prefix: tuple[str, ...]) -> bool:
    try:
        run = subprocess.run([*prefix, "--", sys.executable, "-I", "-S", "-c", "pass"], env={},
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return run.returncode == 0


@lru_cache(maxsize=1)
def _isolation() -> _Isolation:
    """Which namespaces unshare can give an unprivileged process here: probed once, on first use."""
    exe = shutil.which("unshare")
    if exe is None:
        return _Isolation((), False, False, "unshare (util-linux) not found")
    net = (exe, "--user", "--map-root-user", "--net")
    if not _unshare_works(net):
        return _Isolation((), False, False, "unshare cannot create user and network namespaces here")
    for pid in ((*net, "--pid", "--fork", "--kill-child", "--mount", "--mount-proc"),
                (*net, "--pid", "--fork", "--kill-child")):
        if _unshare_works(pid):
            return _Isolation(pid, True, True, "")
    return _Isolation(net, True, False, "")


def sandbox_layers() -> list[str]:
    """The containment this machine gives a program, in words, one layer a line."""
    iso = _isolation()
    root = os.geteuid() == 0
    group = "own process group" + (" and PID namespace" if iso.pids else "") + ", killed on timeout and after each run"
    if iso.pids and "--mount-proc" in iso.prefix:
        group += " (its own /proc: no other process visible)"
    return [
        "fresh python -I -S process per program (standard library only: no site-packages, no qkv)",
        "rlimits: cpu, address space, file size, no core files, processes"
        + (" (RLIMIT_NPROC is not enforced: running as root)" if root else ""),
        group,
        "temporary working directory, removed afterwards; empty environment; stdin closed",
        "no network (unshared network namespace)" if iso.network else f"network NOT isolated: {iso.why_not}",
        "guard: os/shutil/subprocess/socket destructive calls disabled; ctypes, resource, psutil not importable",
    ]


class _Report:
    """What the harness said on the results pipe: lines with the nonce, kept small whatever arrives."""

    def __init__(self, nonce: str, total: int):
        self.nonce, self.total = nonce.encode(), total
        self.program: bool | None = None  # did the program run to its end
        self.program_detail = ""
        self.tests: list[tuple[bool, str]] = []
        self.done = False
        self.exit_status: int | None = None  # the worker's wait status, from the supervisor
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if len(self._pending) > _LINE_BYTES:
            self._pending = b""
        for line in lines:
            parts = line.split(b"\t", 3)
            if len(line) <= _LINE_BYTES and len(parts) == 4 and parts[0] == self.nonce:
                self._event(parts[1].decode("ascii", "replace"), parts[2].decode("ascii", "replace"),
                            parts[3].decode("utf-8", "replace"))

    def _event(self, kind: str, flag: str, detail: str) -> None:
        if kind == "program" and self.program is None:
            self.program, self.program_detail = flag == "1", detail
        elif kind == "test" and self.program and len(self.tests) < self.total:
            self.tests.append((flag == "1", detail))
        elif kind == "done":
            self.done = True
        elif kind == "exit" and flag.lstrip("-").isdigit():
            self.exit_status = int(flag)


def _collect(fd: int, report: _Report, deadline: float) -> bool:
    """Read the results pipe until the supervisor reports the worker's exit, the pipe closes, or the deadline
    passes; True when it timed out."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while report.exit_status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        if not poller.poll(math.ceil(left * 1000)):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        report.feed(chunk)
    return False


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    why = {"SIGXCPU": "CPU time limit", "SIGXFSZ": "file size limit", "SIGSEGV": "crashed",
           "SIGKILL": "CPU hard limit, memory or a kill"}.get(name)
    return f"killed by {name}" + (f" ({why})" if why else "")


def _verdict(report: _Report, timed_out: bool, returncode: int, limits: SandboxLimits,
             output_tail: Callable[[], str]) -> tuple[Status, str]:
    if timed_out:
        return "timeout", f"timed out after {limits.timeout_s:g} s"
    status = report.exit_status
    if status is None:  # the supervisor never reported: it was killed, or the sandbox did not start
        if returncode < 0:
            return "killed", _signal_name(-returncode)
        return "error", f"the sandbox exited with status {returncode} without a report: {output_tail()}"
    if os.WIFSIGNALED(status):
        return "killed", _signal_name(os.WTERMSIG(status))
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    if report.program is None:
        return "error", f"exited with status {code} before the program finished"
    if not report.program:
        return "error", report.program_detail
    if not report.done:
        return "failed", f"exited with status {code} during test {len(report.tests) + 1}"
    failing = next((i for i, (ok, _) in enumerate(report.tests) if not ok), None)
    if failing is None:
        return "passed", ""
    return "failed", f"test {failing + 1}: {report.tests[failing][1]}"


def _tail(path: str) -> str:
    """The last line of the captured output, from its last few KB."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL_BYTES))
            lines = f.read(_TAIL_BYTES).decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return "(no output)"
    return lines[-1][:200] if lines else "(no output)"


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group; the leader is not reaped yet, so its id cannot have been reused."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _check_job(program: object, tests: object) -> list[str]:
    if not isinstance(program, str):
        raise QKVError(f"a sandboxed program is Python source (str), got {type(program).__name__}")
    if isinstance(tests, str) or not all(isinstance(t, str) for t in tests):
        raise QKVError("a sandboxed program's tests are a list of Python source strings")
    return list(tests)


def _run(program: str, tests: Sequence[str], limits: SandboxLimits, *, guard: bool = True) -> Outcome:
    """One program in one fresh sandbox (`guard=False` only for tests of the other layers)."""
    tests = _check_job(program, tests)
    iso = _isolation()
    nonce = secrets.token_hex(16)
    report = _Report(nonce, len(tests))
    mib = 1 << 20
    with tempfile.TemporaryDirectory(prefix="qkv-sandbox-", ignore_cleanup_errors=True) as tmp:
        output = os.path.join(tmp, ".output")
        read_end, write_end = os.pipe()
        rlimits = (math.ceil(limits.cpu_s), int(limits.memory_mb * mib), int(limits.file_mb * mib), NPROC)
        payload = marshal.dumps((program, tests, nonce, write_end, rlimits, guard))
        start = time.perf_counter()
        deadline = time.monotonic() + limits.timeout_s
        try:
            with open(output, "wb") as out:
                proc = subprocess.Popen([*iso.prefix, *(["--"] if iso.prefix else []), sys.executable, "-I", "-S",
                                         "-u", "-c", _HARNESS], stdin=subprocess.PIPE, stdout=out,
                                        stderr=subprocess.STDOUT, cwd=tmp, env={}, pass_fds=(write_end,),
                                        start_new_session=True)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        try:
            try:
                proc.stdin.write(payload)
                proc.stdin.close()
            except BrokenPipeError:
                pass
            timed_out = _collect(read_end, report, deadline)
        finally:
            os.close(read_end)
            _kill_group(proc)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # unkillable (stuck in the kernel): subprocess reaps it later
                pass
        ms = (time.perf_counter() - start) * 1000
        status, detail = _verdict(report, timed_out, proc.returncode or 0, limits, lambda: _tail(output))
    results = tuple(ok for ok, _ in report.tests)
    return Outcome(passed=sum(results), total=len(tests), status=status, detail=detail[:DETAIL_CHARS], ms=ms,
                   tests=results)


def run_program(program: str, tests: Sequence[str], limits: SandboxLimits = SandboxLimits()) -> Outcome:
    """Run `program` (Python source) in a fresh sandbox, then each test (source, run in the program's namespace)."""
    return _run(program, tests, limits)


def default_workers() -> int:
    """One worker per CPU core this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def run_programs(jobs: Sequence[tuple[str, Sequence[str]]], limits: SandboxLimits = SandboxLimits(),
                 workers: int | None = None, progress: Callable[[int], object] | None = None) -> list[Outcome]:
    """Run (program, tests) jobs in parallel sandboxes, `workers` at a time (default: one per core); outcomes in
    the jobs' order. `progress(n_done)` is called after each job, from the calling thread."""
    jobs = [(program, _check_job(program, tests)) for program, tests in jobs]
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise QKVError(f"workers must be a whole number of at least 1, got {workers!r}", argument="workers")
    if not jobs:
        return []
    _isolation()  # probe once, before the threads start
    results: list[Outcome | None] = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="qkv-sandbox") as pool:
        futures = {pool.submit(_run, program, tests, limits): i for i, (program, tests) in enumerate(jobs)}
        try:
            for n_done, future in enumerate(as_completed(futures), 1):
                results[futures[future]] = future.result()
                if progress is not None:
                    progress(n_done)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results  # type: ignore[return-value]
