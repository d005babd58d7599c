"""The sandbox for model-written code: right answers pass, wrong ones fail, and hostile ones are contained, counted as
failures, and do not stop the evaluation."""

import os
import random
import select
import socket
import time
from pathlib import Path

import pytest

from qkv.errors import QKVError
from qkv.evaluation import sandbox
from qkv.evaluation.sandbox import Outcome, SandboxLimits, run_program, run_programs, sandbox_layers

LIMITS = SandboxLimits(timeout_s=2, memory_mb=512)
DOUBLE = "def double(x):\n    return x * 2\n"


def test_a_correct_program_passes_every_test():
    out = run_program(DOUBLE, ["assert double(2) == 4", "assert double('ab') == 'abab'", "assert double(0) == 0"],
                      LIMITS)
    assert (out.status, out.passed, out.total, out.detail) == ("passed", 3, 3, "")
    assert out.fraction == 1.0 and out.tests == (True, True, True) and 0 < out.ms < 2000


def test_a_wrong_program_fails_some_tests_and_they_are_counted():
    out = run_program("def double(x):\n    return x + 2\n",
                      ["assert double(2) == 4", "assert double(3) == 6, 'three'", "assert double(0) == 0"], LIMITS)
    assert (out.status, out.passed, out.total) == ("failed", 1, 3)
    assert out.tests == (True, False, False)
    assert out.detail == "test 2: AssertionError: three"  # the first failing test, its exception and message
    assert out.fraction == pytest.approx(1 / 3)


def test_an_exception_in_one_test_does_not_stop_the_others():
    out = run_program(DOUBLE, ["raise ValueError('boom')", "assert double(1) == 2", "double(", "x = [][1]",
                               "bytearray(10**10)", "assert double(2) == 4"], LIMITS)
    assert out.tests == (False, True, False, False, False, True)  # MemoryError in a test is that test failing
    assert (out.status, out.passed, out.total) == ("failed", 2, 6)
    assert out.detail == "test 1: ValueError: boom"


def test_a_program_that_does_not_run_is_an_error():
    out = run_program("def double(x)\n    return x * 2\n", ["assert double(2) == 4"], LIMITS)
    assert (out.status, out.passed, out.total) == ("error", 0, 1)
    assert out.detail.startswith("SyntaxError")
    out = run_program("def double(x):\n    return x * 2\nraise RuntimeError('at definition')\n", ["pass"], LIMITS)
    assert (out.status, out.passed, out.detail) == ("error", 0, "RuntimeError: at definition")


def test_humaneval_shape_program_with_check():
    prompt = 'def add(a, b):\n    """Add two numbers."""\n'
    test = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
    good = run_program(prompt + "    return a + b\n" + "\n" + test, ["check(add)"], LIMITS)
    bad = run_program(prompt + "    return a - b\n" + "\n" + test, ["check(add)"], LIMITS)
    assert (good.status, good.passed) == ("passed", 1)
    assert (bad.status, bad.passed) == ("failed", 0)


def test_hostile_programs_are_contained_and_the_evaluation_goes_on(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("keep me")
    lone = tmp_path / "lone.txt"
    lone.write_text("me too")
    touched = tmp_path / "touched"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        # each one, were it not contained, would finish its definition and pass its one trivial test
        hostile = {
            "infinite loop": "while True:\n    pass\n",
            "fork bomb": "import os\nwhile True:\n    os.fork()\n",
            "10 GB": "x = bytearray(10**10)\n",
            "os.system": f"import os\nassert os.system('/usr/bin/touch {touched}') == 0\n",
            "rmtree": f"import shutil\nshutil.rmtree({str(precious)!r})\n",
            "os.remove": f"import os\nos.remove({str(lone)!r})\n",
            "socket": f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                      "s.sendall(b'hello')\n",
            "print loop": "while True:\n    print('x' * 10**6)\n",
            "one big print": "print('y' * 50_000_000)\n",
            "subprocess": f"import subprocess\nsubprocess.run(['/usr/bin/touch', {str(touched)!r}])\n",
            "exit": "exit(0)\n",
        }
        jobs = [(program, ["assert True"]) for program in hostile.values()] + [(DOUBLE, ["assert double(21) == 42"])]
        start = time.monotonic()
        outcomes = run_programs(jobs, LIMITS, workers=2)
        elapsed = time.monotonic() - start
        listener.setblocking(False)
        readable, _, _ = select.select([listener], [], [], 0.2)
        assert not readable, "the sandboxed program reached the test's listening socket"
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    by_name = dict(zip(hostile, outcomes[:-1], strict=True))
    for name, out in by_name.items():
        assert out.status != "passed" and out.passed == 0, (name, out)
        assert out.ms < LIMITS.timeout_s * 1000 + 1500, (name, out)
    assert by_name["infinite loop"].status == "timeout"
    assert by_name["infinite loop"].detail == "timed out after 2 s"
    assert by_name["10 GB"].detail == "MemoryError"
    assert "File too large" in by_name["one big print"].detail
    for name, call in [("fork bomb", "os.fork"), ("os.system", "os.system"), ("rmtree", "os."),
                       ("os.remove", "os.remove"), ("socket", "sockets"), ("subprocess", "subprocess.Popen"),
                       ("exit", "exit")]:
        assert by_name[name].status == "error", (name, by_name[name])  # the guard stopped it at definition
        assert by_name[name].detail.startswith(f"SandboxViolation: {call}"), (name, by_name[name])
    assert not touched.exists()
    assert (precious / "keep.txt").read_text() == "keep me"
    assert lone.read_text() == "me too"
    assert (outcomes[-1].status, outcomes[-1].passed) == ("passed", 1)
    assert elapsed < 12


def test_the_child_does_not_see_the_parents_environment(monkeypatch):
    monkeypatch.setenv("QKV_SANDBOX_SECRET", "hunter2")
    assert "QKV_SANDBOX_SECRET" in os.environ
    out = run_program("import os\nenv = dict(os.environ)\n",
                      ["assert 'QKV_SANDBOX_SECRET' not in env", "assert 'hunter2' not in str(env)",
                       "assert 'PATH' not in env and 'HOME' not in env"], LIMITS)
    assert (out.status, out.passed) == ("passed", 3), out.detail


def test_the_working_directory_is_fresh_and_removed_afterwards():
    program = "import os\nhere = os.getcwd()\nwith open('scratch.txt', 'w') as f:\n    f.write('hi')\n"
    tests = [f"assert here != {os.getcwd()!r}", "assert os.path.basename(here).startswith('qkv-sandbox-')",
             "assert open(os.path.join(here, 'scratch.txt')).read() == 'hi'",
             "assert sorted(n for n in os.listdir(here) if not n.startswith('.')) == ['scratch.txt']",
             "raise Exception(here)"]  # carries the directory back in the detail
    out = run_program(program, tests, LIMITS)
    assert out.tests == (True, True, True, True, False), out.detail
    here = out.detail.removeprefix("test 5: Exception: ")
    assert here.startswith("/") and Path(here).name.startswith("qkv-sandbox-")
    assert not Path(here).exists()


def test_the_program_cannot_import_qkv_or_site_packages():
    program = ("try:\n    import qkv\nexcept ImportError:\n    no_qkv = True\nelse:\n    no_qkv = False\n"
               "try:\n    import numpy\nexcept ImportError:\n    no_numpy = True\nelse:\n    no_numpy = False\n"
               "import json\n")  # the standard library still imports
    out = run_program(program, ["assert no_qkv", "assert no_numpy", "assert json.loads('[1]') == [1]"], LIMITS)
    assert (out.status, out.passed) == ("passed", 3), out.detail


def test_stdin_is_closed_and_results_cannot_be_faked_without_the_nonce():
    fake = "0123\tprogram\t1\t\n0123\ttest\t1\t\n0123\ttest\t1\t\n0123\tdone\t\t\n0123\texit\t0\t\nno newline"
    program = ("import os, sys\n"
               f"print({fake!r}, flush=True)\nsys.stderr.write({fake!r})\n"
               "for fd in range(3, 64):  # the results pipe among them\n"
               "    try:\n"
               f"        os.write(fd, {fake!r}.encode())\n"
               "    except OSError:\n"
               "        pass\n"
               "line = sys.stdin.read()\n")
    out = run_program(program, ["assert line == ''", "assert False", "assert False"], LIMITS)
    assert (out.status, out.passed, out.tests) == ("failed", 1, (True, False, False)), out


def test_cpu_limit_kills_with_sigxcpu():
    out = run_program("while True:\n    pass\n", ["pass"], SandboxLimits(timeout_s=5, cpu_s=1, memory_mb=512))
    assert (out.status, out.passed) == ("killed", 0)
    assert out.detail.startswith("killed by SIGXCPU"), out.detail
    assert out.ms < 4000


def _processes_with(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(entry.name)
        except OSError:
            pass
    return found


@pytest.mark.parametrize("escape", ["", "os.setsid()\n    "])
def test_a_stray_child_dies_with_the_program(escape):
    """Without the guard (so the program may fork and exec): a child that sleeps on is killed with its process
    group when the program times out; one that left the group with setsid still dies with the PID namespace."""
    if escape and not sandbox._isolation().pids:
        pytest.skip("no PID namespace on this machine: a child that calls setsid escapes the process-group kill")
    marker = f"{random.randint(3000, 3600)}.{random.randint(10**8, 10**9)}"
    program = (f"import os\nif os.fork() == 0:\n    {escape}os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
               "while True:\n    pass\n")
    out = sandbox._run(program, ["pass"], SandboxLimits(timeout_s=1, memory_mb=512), guard=False)
    assert out.status == "timeout"
    deadline = time.monotonic() + 3
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_with(marker)


def test_the_network_namespace_blocks_sockets_even_without_the_guard():
    if not sandbox._isolation().network:
        pytest.skip("unshare cannot create a network namespace here: only the guard blocks sockets")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        program = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'x')\n"
        out = sandbox._run(program, ["pass"], LIMITS, guard=False)
        assert out.status == "error" and "OSError" in out.detail, out  # unreachable, not refused by the guard
        listener.setblocking(False)
        assert not select.select([listener], [], [], 0.2)[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_run_programs_keeps_the_input_order(workers):
    # job i has i + 1 tests, and the early jobs are the slow ones, so finishing order is not input order
    jobs = [(f"import time\ntime.sleep({0.05 * (3 - i)})\nn = {i}\n", [f"assert n == {i}"] * (i + 1))
            for i in range(4)]
    jobs.append(("n = 4\n", ["assert n == 5"]))
    done = []
    outcomes = run_programs(jobs, LIMITS, workers=workers, progress=done.append)
    assert all(isinstance(o, Outcome) for o in outcomes)
    assert [o.total for o in outcomes] == [1, 2, 3, 4, 1]
    assert [o.status for o in outcomes] == ["passed"] * 4 + ["failed"]
    assert done == [1, 2, 3, 4, 5]
    assert run_programs([], LIMITS, workers=workers) == []


def test_limits_and_arguments_are_checked():
    for bad in ({"timeout_s": 0}, {"cpu_s": -1}, {"memory_mb": 0}, {"file_mb": 0}):
        with pytest.raises(QKVError, match="must be a number above 0") as caught:
            SandboxLimits(**bad)
        assert caught.value.argument == next(iter(bad))
    with pytest.raises(QKVError, match="workers"):
        run_programs([(DOUBLE, ["pass"])], LIMITS, workers=0)
    with pytest.raises(QKVError, match="list of Python source strings"):
        run_program(DOUBLE, "assert double(1) == 2", LIMITS)
    with pytest.raises(QKVError, match="Python source"):
        run_program(b"x = 1", [], LIMITS)


def test_sandbox_layers_are_described():
    layers = sandbox_layers()
    assert len(layers) >= 5 and all(isinstance(line, str) and line for line in layers)
    assert any("network" in line for line in layers)
    assert any(line.startswith("guard") for line in layers)
