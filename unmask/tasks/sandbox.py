"""Run model-written Python in a child process that cannot reach the network or write outside its
own fresh temp dir, killed at a wall-clock timeout. No benchmark logic here (see humaneval.py).

Layers, outermost first:
- the parent: a new session (the whole process group is killed at the timeout), cwd = a fresh temp
  dir removed afterwards, a minimal environment, stdin closed, output truncated;
- the kernel: an empty network namespace (`unshare --net`) where the machine allows one, and
  rlimits on CPU time, address space, file size, open files and core dumps;
- the interpreter: `python -I -S` (no site-packages, no environment, no user paths) running this
  file as a bootstrap, which installs an audit hook before the program runs. The hook refuses
  writes outside the temp dir (open for writing, remove, rename, mkdir, chmod, ...), chdir,
  symlinks and hard links, process creation (fork, exec, spawn, system, subprocess), signals,
  sockets, ctypes, and the introspection that could reach the hook (gc, new audit hooks).

Threat model: the accidents model-written code makes (deleting files, writing to the repo, fork
bombs, infinite loops, network calls). An in-process hook is not a container: for code written to
escape on purpose, run the evaluation in a container or VM as well.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType

OUTPUT_CHARS = 2000  # of stdout + stderr kept in a Result
FILE_MB = 16  # largest file the program may write inside its temp dir
MAX_FILES = 64


@dataclass
class Result:
    status: str  # "passed" (exit 0), "failed" (non-zero exit) or "timed out"
    returncode: int | None  # None when killed at the timeout
    output: str  # the tail of stdout + stderr
    wall_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@cache
def _unshare_net() -> tuple[str, ...]:
    """The prefix that starts a command in an empty network namespace here, or () if none does."""
    if shutil.which("unshare") is None:
        return ()
    for prefix in (("unshare", "--net"), ("unshare", "--user", "--map-root-user", "--net")):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def run_python(source: str, timeout_s: float = 5.0, memory_mb: int = 1024) -> Result:
    """Run `source` as a program in the sandbox; `timeout_s` is wall-clock, enforced by a kill."""
    root = tempfile.mkdtemp(prefix="unmask-sandbox-")
    try:
        program = os.path.join(root, "program.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(source)
        cmd = [
            *_unshare_net(),
            sys.executable,
            "-I",
            "-S",
            os.path.abspath(__file__),
            root,
            str(timeout_s),
            str(memory_mb),
        ]
        env = {"PATH": "/usr/bin:/bin", "HOME": root, "TMPDIR": root, "LANG": "C.UTF-8"}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout_s)
            returncode: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, _ = proc.communicate()
            returncode = None
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = out.decode("utf-8", "replace")[-OUTPUT_CHARS:]
    if returncode is None:
        status = "timed out"
    else:
        status = "passed" if returncode == 0 else "failed"
    return Result(status=status, returncode=returncode, output=text, wall_s=wall)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---- the child: everything below runs inside the sandboxed interpreter -------------------------

WRITE_EVENTS = {
    # event -> indices of its path arguments; each must lie inside the temp dir
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.rename": (0, 1),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.chflags": (0,),
    "os.utime": (0,),
    "os.truncate": (0,),
    "os.setxattr": (0,),
    "os.removexattr": (0,),
    "shutil.rmtree": (0,),
}
# Arguments that make a path relative to a directory fd, which the hook cannot see through.
DIR_FD_ARG = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 2, "os.chmod": 2, "os.chown": 3}
REFUSED_EVENTS = {
    "os.chdir",
    "os.link",
    "os.symlink",
    "os.fork",
    "os.forkpty",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.system",
    "os.startfile",
    "os.kill",
    "os.killpg",
    "signal.pthread_kill",
    "subprocess.Popen",
    "pty.spawn",
    "sys.addaudithook",
    "sys.setprofile",
    "sys.settrace",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
}
REFUSED_PREFIXES = ("socket.", "ctypes.", "winreg.", "_winapi.")
REFUSED_IMPORTS = {"ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "cffi"}
# posix functions that create files but raise no audit event.
UNAUDITED = ("mkfifo", "mknod", "lchown", "lchmod", "lchflags")


def install_guard(root: str) -> None:
    """Install the audit hook for temp dir `root`. Everything the hook uses is bound now (default
    arguments and builtin methods), so the program cannot change it by patching os or builtins."""
    root = os.path.realpath(root)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    odd_flags = getattr(os, "O_PATH", 0) | getattr(os, "O_DIRECTORY", 0)

    def inside(path, _str=str, _bytes=bytes, _type=type, _root=root, _sep=os.sep) -> bool:
        # Exact str/bytes only: a PathLike's __fspath__ could answer differently at open time.
        if _type(path) is _bytes:
            path = _bytes.decode(path, "utf-8", "surrogateescape")
        elif _type(path) is not _str:
            return False
        if not _str.startswith(path, _sep):
            path = _root + _sep + path  # cwd is root, and chdir is refused
        parts: list[str] = []
        for part in _str.split(path, _sep):
            if part == "..":
                if parts:
                    parts.pop()
            elif part and part != ".":
                parts.append(part)
        # Lexical resolution is sound here: no symlinks can exist inside root (os.symlink and
        # os.link are refused), and a path outside root is refused whatever it points to.
        full = _sep + _str.join(_sep, parts)
        return full == _root or _str.startswith(full, _root + _sep)

    def hook(
        event,
        args,
        _inside=inside,
        _write_events=MappingProxyType(dict(WRITE_EVENTS)),
        _dir_fd=MappingProxyType(dict(DIR_FD_ARG)),
        _refused=frozenset(REFUSED_EVENTS),
        _prefixes=REFUSED_PREFIXES,
        _imports=frozenset(REFUSED_IMPORTS),
        _write_flags=write_flags,
        _odd_flags=odd_flags,
        _stat=os.stat,
        _int=int,
        _type=type,
        _str=str,
        _bytes=bytes,
        _error=PermissionError,
    ) -> None:
        if event == "open":
            path, flags = args[0], args[2]
            if _type(path) is _int:
                return  # an fd this process already holds
            if _type(path) is not _str and _type(path) is not _bytes:
                # Never call into the program's objects (__fspath__) from inside the hook.
                raise _error("sandbox: open() takes str or bytes paths here")
            if flags & _odd_flags:
                raise _error(f"sandbox: open with O_PATH/O_DIRECTORY refused: {path!r}")
            if flags & _write_flags:
                if not _inside(path):
                    raise _error(f"sandbox: writing outside the sandbox refused: {path!r}")
                return
            try:
                is_dir = (_stat(path).st_mode & 0o170000) == 0o040000
            except (OSError, TypeError, ValueError):
                return  # open() itself will fail the same way
            if is_dir:
                # A directory fd would let os.*(dir_fd=...) resolve paths the hook cannot see.
                raise _error(f"sandbox: opening a directory refused: {path!r}")
            return
        if event in _write_events:
            at = _dir_fd.get(event)
            if at is not None and at < len(args) and args[at] not in (None, -1):  # -1: cwd
                raise _error(f"sandbox: {event} relative to a directory fd refused")
            for i in _write_events[event]:
                if not _inside(args[i]):
                    shown = args[i] if _type(args[i]) in (_str, _bytes) else "a non-str path"
                    raise _error(f"sandbox: {event} outside the sandbox refused: {shown!r}")
            return
        if event == "import":
            if args[0] in _imports:
                raise _error(f"sandbox: import {args[0]} refused")
            return
        if event in _refused or _str.startswith(event, _prefixes):
            raise _error(f"sandbox: {event} refused")

    sys.addaudithook(hook)


def _child_main(root: str, timeout_s: float, memory_mb: int) -> None:
    cpu_s = int(timeout_s) + 1
    limits = {
        resource.RLIMIT_CPU: cpu_s,
        resource.RLIMIT_AS: memory_mb << 20,
        resource.RLIMIT_FSIZE: FILE_MB << 20,
        resource.RLIMIT_NOFILE: MAX_FILES,
        resource.RLIMIT_CORE: 0,
    }
    for kind, value in limits.items():
        resource.setrlimit(kind, (value, value))
    import posix

    for name in UNAUDITED:
        for module in (os, posix):
            if hasattr(module, name):
                delattr(module, name)
    with open(os.path.join(root, "program.py"), encoding="utf-8") as f:
        code = compile(f.read(), "program.py", "exec")
    install_guard(root)
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})


if __name__ == "__main__":
    _child_main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
