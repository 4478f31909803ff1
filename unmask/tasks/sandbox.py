"""Run model-written Python under OS isolation, killed at a wall-clock timeout. No benchmark logic
here (see humaneval.py).

Model-written code is untrusted by definition, and a guard inside the interpreter (audit hooks)
cannot be made airtight: modules already loaded and pidfds route around it. So the isolation is
the kernel's, set up by bubblewrap (`bwrap`, Debian's `bubblewrap`), layered:

- user: when the harness runs as root, the sandbox runs as `nobody` (never as a uid that maps
  back to root, which could read root's files); otherwise as the harness's own unprivileged user;
- namespaces: fresh user, mount, PID, IPC, UTS, cgroup and network namespaces, and no further user
  namespaces inside: it sees no other process (so it can signal none) and has no network;
- filesystem: a read-only view of `/`, with home directories, /run and /var/tmp hidden behind
  empty tmpfs mounts, and a private writable /tmp of `TMP_MB` that vanishes with the sandbox;
  nothing is written on the host, so an interrupted run leaves nothing behind;
- system calls: a seccomp filter refuses process and thread creation (fork, vfork, clone, clone3,
  execve, execveat), sockets, namespace and mount calls, ptrace, bpf, perf and io_uring;
- rlimits: CPU time, address space, processes (1), file size, open files, no core dumps;
- output: at most `OUTPUT_BYTES` are read; a program that prints more is killed and fails, so a
  flood costs the harness nothing;
- completion: a program passes only if it exits 0 *and* the bootstrap, after the program's last
  line ran, wrote a per-run random marker to a pipe of its own. Exiting early (sys.exit(0),
  os._exit(0), a signal) therefore fails. The marker lives in the sandboxed process's memory, so
  code that searches that memory for it on purpose could forge it; it cannot escape the sandbox.

Without a working bwrap the runner refuses to execute code (`SandboxUnavailable`, saying why);
there is no unsandboxed fallback.
"""

from __future__ import annotations

import os
import platform
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

OUTPUT_BYTES = 1 << 20  # a program printing more than this is killed and fails
OUTPUT_CHARS = 2000  # of stdout + stderr kept in a Result
TMP_MB = 16  # the private /tmp
FILE_MB = 16  # largest file the program may write
MAX_FILES = 64
NOBODY = 65534
INSTALL = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; `make setup` does it)"


class SandboxUnavailable(RuntimeError):
    """Code cannot be run safely here; the message says why and how to fix it."""


@dataclass
class Result:
    status: str  # "passed", "failed" or "timed out"
    returncode: int | None  # None when killed (timeout, output limit)
    output: str  # the tail of stdout + stderr
    wall_s: float
    note: str = ""  # why it failed, when the harness knows (no marker, output limit)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# ---- the harness side ---------------------------------------------------------------------------


def _bwrap_argv(interpreter: str, bind: str | None) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(f"no sandbox for model-written code: bwrap not found; {INSTALL}")
    argv = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
    ]
    argv += ["--as-pid-1", "--cap-drop", "ALL", "--ro-bind", "/", "/", "--dev", "/dev"]
    argv += ["--proc", "/proc"]
    hidden = ["/home", "/root", "/run", "/var/tmp", os.path.expanduser("~")]
    for path in dict.fromkeys(hidden):
        if os.path.isdir(path) and path != "/":
            argv += ["--tmpfs", path]
    if bind is not None:  # the interpreter's own tree, when it lives under a hidden directory
        argv += ["--ro-bind", bind, bind]
    argv += ["--size", str(TMP_MB << 20), "--tmpfs", "/tmp", "--chdir", "/tmp", "--clearenv"]
    for key, value in (("PATH", "/usr/bin:/bin"), ("HOME", "/tmp"), ("LANG", "C.UTF-8")):
        argv += ["--setenv", key, value]
    if os.geteuid() == 0:
        argv += ["--uid", str(NOBODY), "--gid", str(NOBODY)]
    return argv


def _hidden_root(path: str) -> str | None:
    """The install prefix of interpreter `path` when a hidden directory holds it, else None."""
    home = os.path.expanduser("~")
    for top in ("/home", "/root", home):
        if top != "/" and path.startswith(top.rstrip("/") + "/"):
            return str(Path(path).parent.parent)
    return None


def _popen_user() -> dict:
    """Popen arguments that drop a root harness to nobody before bwrap starts."""
    if os.geteuid() != 0:
        return {}
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []}


@cache
def _setup() -> tuple[tuple[str, ...], str]:
    """(bwrap argv prefix, interpreter) that start a sandboxed Python here; raises if none does."""
    if sys.platform != "linux":
        raise SandboxUnavailable(f"no sandbox for model-written code on {sys.platform}: Linux only")
    if _seccomp_arch() is None:
        raise SandboxUnavailable(f"no seccomp filter for {platform.machine()}; x86_64/aarch64 only")
    candidates = [os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"]
    errors = []
    for interpreter in dict.fromkeys(candidates):
        if not os.path.isfile(interpreter):
            continue
        bind = _hidden_root(interpreter)
        if bind is not None and os.geteuid() == 0:
            continue  # nobody cannot reach root's home; try a system interpreter
        argv = _bwrap_argv(interpreter, bind)
        try:
            probe = subprocess.run(
                [*argv, interpreter, "-I", "-S", "-c", "print('ok')"],
                capture_output=True,
                timeout=30,
                **_popen_user(),
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            errors.append(f"{interpreter}: {e}")
            continue
        if probe.returncode == 0 and probe.stdout.strip() == b"ok":
            return tuple(argv), interpreter
        tail = probe.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        errors.append(f"{interpreter}: {tail[0]}")
    why = "; ".join(errors) or "no Python interpreter the sandbox user can run"
    raise SandboxUnavailable(f"no sandbox for model-written code: bwrap failed ({why}); {INSTALL}")


def check() -> None:
    """Raise SandboxUnavailable (one line: why, and the fix) unless code can be sandboxed here."""
    _setup()


def run_python(source: str, timeout_s: float = 5.0, memory_mb: int = 1024) -> Result:
    """Run `source` as a program in the sandbox; `timeout_s` is wall-clock, enforced by a kill."""
    argv, interpreter = _setup()
    marker = secrets.token_hex(16)
    done_r, done_w = os.pipe()
    cmd = [*argv, interpreter, "-I", "-S", "-c", BOOTSTRAP, str(timeout_s), str(memory_mb)]
    cmd.append(str(done_w))
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(done_w,),
            start_new_session=True,
            **_popen_user(),
        )
    except BaseException:
        os.close(done_r)
        os.close(done_w)
        raise
    os.close(done_w)
    note = ""
    try:
        try:
            proc.stdin.write(f"{marker}\n{source}".encode("utf-8", "surrogateescape"))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        out, killed, note = _drain(proc, time.perf_counter() + timeout_s)
        returncode = None if killed else proc.wait()
        finished = _read_marker(done_r) == marker
    finally:
        os.close(done_r)
        if proc.poll() is None:
            _kill_group(proc.pid)
            proc.wait()
    wall = time.perf_counter() - t0
    text = out.decode("utf-8", "replace")[-OUTPUT_CHARS:]
    if killed and note == "timeout":
        status, note = "timed out", ""
    elif returncode == 0 and finished:
        status = "passed"
    else:
        status = "failed"
        if returncode == 0:
            note = "exited before its last line ran"
    return Result(status=status, returncode=returncode, output=text, wall_s=wall, note=note)


def _drain(proc: subprocess.Popen, deadline: float) -> tuple[bytes, bool, str]:
    """Read the program's output until it closes it, keeping the last OUTPUT_CHARS*4 bytes.
    Returns (tail, killed, why): killed at the deadline or past OUTPUT_BYTES."""
    fd = proc.stdout.fileno()
    tail, total, keep = bytearray(), 0, OUTPUT_CHARS * 4
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            _kill_group(proc.pid)
            return bytes(tail), True, "timeout"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return bytes(tail), False, ""
        total += len(chunk)
        tail += chunk
        del tail[:-keep]
        if total > OUTPUT_BYTES:
            _kill_group(proc.pid)
            return bytes(tail), True, f"output over {OUTPUT_BYTES} bytes; killed"


def _read_marker(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 64).decode("ascii", "replace").strip()
    except BlockingIOError:
        return ""


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---- seccomp: the filter the bootstrap installs before the program runs --------------------------

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
REFUSED_SYSCALLS = {
    # fork vfork clone clone3 execve execveat ptrace unshare setns mount umount2 pivot_root chroot
    # bpf perf_event_open io_uring_setup kexec_load socket (so no network, and no Unix socket of
    # the host either: a socket file is reachable through a read-only mount)
    "x86_64": (57, 58, 56, 435, 59, 322, 101, 272, 308, 165, 166, 155, 161, 321, 298, 425, 246, 41),
    "aarch64": (220, 435, 221, 281, 117, 97, 268, 40, 39, 41, 51, 280, 241, 425, 104, 198),
}


def _seccomp_arch() -> str | None:
    machine = platform.machine()
    return machine if machine in AUDIT_ARCH else None


def seccomp_program(arch: str) -> bytes:
    """A classic-BPF seccomp filter: EPERM for REFUSED_SYSCALLS (and x32 calls), else allow; a
    foreign architecture is killed."""
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, RET|K
    kill, allow, eperm = 0x80000000, 0x7FFF0000, 0x00050000 | 1
    refused = REFUSED_SYSCALLS[arch]
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, AUDIT_ARCH[arch]), (ret, 0, 0, kill), (ld, 0, 0, 0)]
    if arch == "x86_64":
        prog.append((jge, len(refused) + 1, 0, 0x40000000))  # x32 ABI -> EPERM
    for k, nr in enumerate(refused):
        prog.append((jeq, len(refused) - k, 0, nr))
    prog += [(ret, 0, 0, allow), (ret, 0, 0, eperm)]
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


# ---- the child: BOOTSTRAP runs inside the sandboxed interpreter (`python -I -S -c`) -------------

BOOTSTRAP = f"""
def main():
    import ctypes, os, resource, sys
    timeout_s, memory_mb, done_fd = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    marker, _, source = sys.stdin.buffer.read().partition(b"\\n")
    sys.stdin.close()
    os.open(os.devnull, os.O_RDONLY)  # fd 0 again, empty
    code = compile(source.decode("utf-8", "surrogateescape"), "program.py", "exec")
    del source
    libc = ctypes.CDLL(None, use_errno=True)
    filt = {seccomp_program(_seccomp_arch() or "x86_64")!r}
    buf = ctypes.create_string_buffer(filt, len(filt))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(len(filt) // 8, ctypes.cast(buf, ctypes.c_void_p))
    # PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with SECCOMP_MODE_FILTER
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:
        sys.stderr.write("sandbox: seccomp filter refused\\n")
        os._exit(97)
    limits = {{
        resource.RLIMIT_CPU: int(timeout_s) + 1,
        resource.RLIMIT_AS: memory_mb << 20,
        resource.RLIMIT_NPROC: 1,
        resource.RLIMIT_FSIZE: {FILE_MB << 20},
        resource.RLIMIT_NOFILE: {MAX_FILES},
        resource.RLIMIT_CORE: 0,
    }}
    for kind, value in limits.items():
        resource.setrlimit(kind, (value, value))
    del ctypes, libc, buf, prog, Prog
    exec(code, {{"__name__": "__main__", "__builtins__": __builtins__}})
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(done_fd, marker)


main()
"""
