"""Run untrusted Python in a separate process under limits: the sandbox of the ``python`` tool and of code rewards.

Every call gets a fresh process and an empty working directory, a minimal environment (nothing of the caller's, so
no API key), stdin closed, output read with a cap, a wall-clock limit (its process group is killed), and rlimits on
CPU time, address space, file size, processes, open files and core dumps. What else holds depends on the tier that
:func:`isolation` probes once per process:

* ``bubblewrap`` (the ``bwrap`` program, when installed and able to start a sandbox here): new pid, network, ipc
  and uts namespaces (and a user namespace when not root); a root of its own holding the system directories and the
  interpreter, read-only, and nothing else of the host (no home, no run directory, no working directory of the
  caller); size-capped tmpfs for ``/workdir`` (the working directory), ``/tmp`` and ``/dev/shm``. As root the code
  runs as uid 65534 (nobody). It cannot reach the network, see or signal the caller's processes, read or write the
  caller's files, and no process of it outlives the call; it can read the system directories and the interpreter's
  prefixes (keep credentials out of a virtual environment).
* ``rlimits`` (bubblewrap missing or unusable, or forced): the limits only, in a temporary directory of the host
  (each file capped, not their total). As root the code runs as uid 65534 where that uid can run the interpreter.
  The code can use the network, read what its uid may read, and a process that calls ``setsid()`` can outlive the
  call; without a uid of its own it can also write the caller's files and signal the caller's processes (as root,
  without a process limit). :attr:`Isolation.summary` says which of these hold, in one line to log at start-up,
  with the step that adds the missing isolation.

``GRPOLAB_SANDBOX=auto|bubblewrap|rlimits`` picks the tier (``auto``, the default, takes bubblewrap where usable);
``docs/sandbox.md`` (``benchmarks/sandbox_table.py``) shows what each tier did with hostile code.

>>> result = run_python("print(6 * 7)")
>>> result.ok, result.stdout, result.reason
(True, '42\\n', '')
>>> run_python("1 / 0").reason
'exit code 1: ZeroDivisionError: division by zero'
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields

SANDBOX_ENV = "GRPOLAB_SANDBOX"
BACKENDS = ("auto", "bubblewrap", "rlimits")
NOBODY = 65534
WORKDIR = "/workdir"
INSTALL_STEP = "apt-get install bubblewrap (Debian, Ubuntu) or dnf install bubblewrap (Fedora)"
# The sandboxed root holds these (read-only) besides the interpreter's own prefixes: programs, libraries, settings.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/nix/store")
OPEN_FILES = 256
_CHUNK = 65536


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one call. ``file_size_mb`` caps every file the code writes (under bubblewrap ``/workdir``,
    ``/tmp`` and ``/dev/shm`` hold twice that each); ``max_processes`` counts the code's processes, itself included;
    ``max_output_chars`` is how much of stdout (its head) and of stderr (its tail) the caller gets back, and
    ``max_output_mb`` how much the code may print in all before it is stopped."""

    wall_time_s: float = 5.0
    cpu_time_s: int = 5
    memory_mb: int = 512
    file_size_mb: int = 16
    max_processes: int = 64
    max_output_chars: int = 2000
    max_output_mb: float = 1.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            value, kind = getattr(self, spec.name), int if spec.type == "int" else int | float
            if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
                raise ValueError(f"sandbox limit {spec.name}={value!r} must be a positive "
                                 f"{'integer' if kind is int else 'number'}")


class ToolError(Exception):
    """A tool call that failed; its message is what the model reads (TRL sends ``{"error": str(e)}``)."""


@dataclass(frozen=True)
class SandboxResult:
    """``ok``: exited 0 within every limit. ``exit_code``: the code's exit status, negative for the signal that
    killed it, None when the sandbox stopped it (a wall-clock or output limit) or its status was lost. ``reason``: ""
    when ok, else one line."""

    ok: bool
    stdout: str
    stderr: str
    exit_code: int | None
    reason: str
    seconds: float

    def tool_output(self) -> str:
        """stdout when ok; else raise :class:`ToolError` with the reason, the stderr tail and the stdout head."""
        if self.ok:
            return self.stdout
        parts = [self.reason] + [f"{name}:\n{text}" for name, text in (("stderr", self.stderr),
                                                                         ("stdout", self.stdout)) if text]
        raise ToolError("\n".join(parts))


@dataclass(frozen=True)
class Isolation:
    """The active tier. The booleans say what holds beyond the limits: ``network`` (none reachable), ``files`` (the
    host is read-only and the caller's files invisible), ``processes`` (the caller's processes cannot be signalled
    or read through /proc), ``cleanup`` (no process of a call outlives it), ``process_limit`` (max_processes holds).
    ``uid``: the uid the code runs as when it is not the caller's; ``bwrap``: the program, for the bubblewrap tier."""

    backend: str
    summary: str
    network: bool = False
    files: bool = False
    processes: bool = False
    cleanup: bool = False
    process_limit: bool = False
    uid: int | None = None
    bwrap: str | None = None


def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run ``code`` as ``python main.py`` in the sandbox of :func:`isolation`; never raises for what the code does."""
    return _execute(code, limits, isolation())


def isolation(backend: str | None = None) -> Isolation:
    """The tier ``backend`` (default: ``$GRPOLAB_SANDBOX``, else ``auto``) gives here; probed once per process."""
    choice = backend or os.environ.get(SANDBOX_ENV) or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"{SANDBOX_ENV}={choice} must be one of {', '.join(BACKENDS)}")
    return _probe(choice)


@functools.cache
def _probe(choice: str) -> Isolation:
    missing = f"{SANDBOX_ENV}={choice}"
    if choice != "rlimits":
        bwrap = shutil.which("bwrap")
        missing = "bubblewrap is not installed"
        if bwrap:
            candidate = _bubblewrap_tier(bwrap)
            trial = _execute("print('ok')", SandboxLimits(), candidate)
            if trial.stdout == "ok\n":
                return candidate
            said = trial.stderr.strip().splitlines()
            missing = f"bubblewrap cannot start a sandbox here: {said[-1] if said else trial.reason}"
        if choice == "bubblewrap":
            raise RuntimeError(f"{SANDBOX_ENV}=bubblewrap but {missing}")
    return _rlimits_tier(missing)


def _bubblewrap_tier(bwrap: str) -> Isolation:
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip() or "bubblewrap"
    root = os.geteuid() == 0
    who = f"as uid {NOBODY}" if root else "as your uid in a user namespace of its own"
    summary = (f"code sandbox: {version}: new pid, network, ipc and uts namespaces, a read-only root of the system "
               f"directories and the interpreter only (none of your files), tmpfs working directory, run {who}; "
               "limits on wall and CPU time, memory, file size, processes and output")
    return Isolation("bubblewrap", summary, network=True, files=True, processes=True, cleanup=True,
                     process_limit=True, uid=NOBODY if root else None, bwrap=bwrap)


def _rlimits_tier(missing: str) -> Isolation:
    uid, root = None, os.geteuid() == 0
    if root:  # a uid of its own keeps the code off root's files and processes, if that uid can run the interpreter
        trial = _execute("print('ok')", SandboxLimits(), Isolation("rlimits", "", uid=NOBODY))
        uid = NOBODY if trial.stdout == "ok\n" else None
    if uid is not None:
        who, exposed = f"run as uid {NOBODY}", "use the network and read what any user may read"
    elif root:
        who = f"run as root ({sys.executable} is out of uid {NOBODY}'s reach)"
        exposed = "use the network, read and write every file, signal every process and fork without limit"
    else:
        who, exposed = "run as your uid", "use the network, read and write your files and signal your processes"
    process_limit = uid is not None or not root  # RLIMIT_NPROC does not apply to root
    summary = (f"code sandbox: rlimits only ({missing}): limits on wall and CPU time, memory, file size"
               f"{', processes' if process_limit else ''} and output, {who}; NOT isolated: the code can {exposed}, "
               f"and a process that calls setsid() can outlive the call; for network, file and process isolation: "
               f"{INSTALL_STEP}")
    return Isolation("rlimits", summary, processes=uid is not None, process_limit=process_limit, uid=uid)


_LAUNCHER = """\
import json, os, resource, sys
spec = json.loads(sys.argv[1])
for name, soft, hard in spec["limits"]:
    ceiling = resource.getrlimit(getattr(resource, name))[1]
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(getattr(resource, name), (soft, hard))
if spec["uid"] is not None:
    os.setgroups([])
    os.setgid(spec["uid"])
    os.setuid(spec["uid"])
child = os.fork()
if child == 0:
    os.close(spec["status_fd"])
    os.execv(spec["argv"][0], spec["argv"])
os.write(spec["status_fd"], str(os.waitpid(child, 0)[1]).encode())
"""
# The launcher sets the limits inside the new process (a preexec_fn is unsafe in a threaded trainer) and stays as the
# code's parent, so the code's getppid() is not the caller, and reports the code's exact wait status on a pipe.


def _launcher(limits: SandboxLimits, iso: Isolation, main: str, status_fd: int) -> list[str]:
    mb = 1 << 20
    # RLIMIT_NPROC counts every task of the uid: leave room for what it already runs (a new user namespace counts
    # afresh), plus the launcher itself.
    fresh_count = iso.bwrap is not None and os.geteuid() != 0
    nproc = limits.max_processes + 1 + (0 if fresh_count else _tasks_of(os.getuid() if iso.uid is None else iso.uid))
    rlimits = [("RLIMIT_CPU", limits.cpu_time_s, limits.cpu_time_s + 1),
               ("RLIMIT_AS", limits.memory_mb * mb, limits.memory_mb * mb),
               ("RLIMIT_FSIZE", limits.file_size_mb * mb, limits.file_size_mb * mb),
               ("RLIMIT_NPROC", nproc, nproc), ("RLIMIT_NOFILE", OPEN_FILES, OPEN_FILES), ("RLIMIT_CORE", 0, 0)]
    spec = {"limits": rlimits, "uid": iso.uid, "status_fd": status_fd,
            "argv": [sys.executable, "-s", "-u", "-B", main]}
    return [sys.executable, "-S", "-s", "-B", "-c", _LAUNCHER, json.dumps(spec)]


def _tasks_of(uid: int) -> int:
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else ()):
        try:
            with open(f"/proc/{pid}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
            count += int(fields["Threads"]) if int(fields["Uid"].split()[0]) == uid else 0
        except (OSError, KeyError, ValueError):
            continue
    return count


def _environment(home: str, tmp: str) -> dict[str, str]:
    """The code's whole environment: nothing of the caller's; one thread per numeric library (the memory limit)."""
    return {"PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": tmp,
            "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


@functools.cache
def _bwrap_mounts(bwrap: str) -> tuple[str, ...]:
    """The read-only part of the sandbox's root: system paths, and the interpreter's prefixes with their parents."""
    args: list[str] = []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    made: set[str] = set()
    for prefix in sorted(prefixes):
        if any(prefix == p or prefix.startswith(p.rstrip("/") + "/") for p in (*SYSTEM_PATHS, *made)):
            continue
        parts = prefix.strip("/").split("/")
        for depth in range(1, len(parts)):  # bwrap would make the parents 0700: unreadable once the uid drops
            parent = "/" + "/".join(parts[:depth])
            if parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", prefix, prefix]
        made.add(prefix)
    return tuple(args)


def _bwrap_argv(iso: Isolation, limits: SandboxLimits, source_fd: int) -> list[str]:
    assert iso.bwrap is not None
    size = str(2 * limits.file_size_mb << 20)  # room for one file at the limit, so that its limit answers first
    args = [iso.bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv", "--cap-drop", "ALL"]
    if iso.uid is None:
        args.append("--unshare-user")
    else:  # real root, no user namespace: the launcher needs these two to drop to iso.uid, then has none
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    args += [*_bwrap_mounts(iso.bwrap), "--proc", "/proc", "--dev", "/dev"]
    for path, perms in ((WORKDIR, "0777"), ("/tmp", "1777"), ("/dev/shm", "1777")):
        args += ["--size", size, "--perms", perms, "--tmpfs", path]
    args += ["--perms", "0644", "--file", str(source_fd), f"{WORKDIR}/main.py", "--chdir", WORKDIR]
    for name, value in _environment(WORKDIR, "/tmp").items():
        args += ["--setenv", name, value]
    return [*args, "--"]


class _Capture:
    """One output stream, read with a cap: the head (stdout) or the tail (stderr, where the traceback ends)."""

    def __init__(self, keep_bytes: int, tail: bool) -> None:
        self.data, self.total, self.keep, self.tail = bytearray(), 0, keep_bytes, tail

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.tail:
            self.data += chunk
            del self.data[: max(0, len(self.data) - self.keep)]
        elif len(self.data) < self.keep:
            self.data += chunk[: self.keep - len(self.data)]

    def text(self, max_chars: int) -> str:
        text = self.data.decode("utf-8", "replace")
        if self.total == len(self.data) and len(text) <= max_chars:
            return text
        shown = text[-max_chars:] if self.tail else text[:max_chars]
        cut = max(1, self.total - len(shown.encode("utf-8", "replace")))
        return f"[... {cut} earlier bytes cut]\n{shown}" if self.tail else f"{shown}\n[... {cut} more bytes cut]"


def _execute(code: str, limits: SandboxLimits, iso: Isolation) -> SandboxResult:
    started = time.monotonic()
    status_read, status_write = os.pipe()
    host_dir = None
    try:
        with tempfile.TemporaryFile() as source:
            if iso.bwrap:
                source.write(code.encode("utf-8"))
                source.flush()
                source.seek(0)
                argv = _bwrap_argv(iso, limits, source.fileno()) + _launcher(limits, iso, "main.py", status_write)
                env, cwd, fds = None, None, (source.fileno(), status_write)
            else:
                host_dir = tempfile.mkdtemp(prefix="grpolab-sandbox-")
                main = os.path.join(host_dir, "main.py")
                with open(main, "w", encoding="utf-8") as file:
                    file.write(code)
                os.chmod(main, 0o644)
                if iso.uid is not None:
                    os.chown(host_dir, iso.uid, iso.uid)
                argv, env, cwd = _launcher(limits, iso, main, status_write), _environment(host_dir, host_dir), host_dir
                fds = (status_write,)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=env, cwd=cwd, pass_fds=fds, start_new_session=True)
        os.close(status_write)
        status_write = -1
        out, err, flag = _collect(proc, limits, started)
        os.set_blocking(status_read, False)
        try:
            status = os.read(status_read, 64)
        except BlockingIOError:
            status = b""
    finally:
        if status_write >= 0:
            os.close(status_write)
        os.close(status_read)
        if host_dir:
            shutil.rmtree(host_dir, ignore_errors=True)
    stdout, stderr = out.text(limits.max_output_chars), err.text(limits.max_output_chars)
    # a status after the sandbox stopped the code reports the sandbox's own kill, which can reach the launcher late
    exit_code = os.waitstatus_to_exitcode(int(status)) if status and not flag else None
    if flag:
        reason = flag
    elif exit_code is None:
        ended = proc.returncode if iso.bwrap is None or proc.returncode <= 128 else 128 - proc.returncode
        reason = "the code's parent process ended: " + _ending(ended, err, limits, iso)
    else:
        reason = "" if exit_code == 0 else _ending(exit_code, err, limits, iso)
    return SandboxResult(not reason, stdout, stderr, exit_code, reason, round(time.monotonic() - started, 3))


def _collect(proc: subprocess.Popen, limits: SandboxLimits, started: float) -> tuple[_Capture, _Capture, str]:
    """Read both streams until they close or the wall-clock limit; (stdout, stderr, why the call was stopped)."""
    keep = limits.max_output_chars * 4  # UTF-8: at most 4 bytes a character
    out, err = _Capture(keep, tail=False), _Capture(keep, tail=True)
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    deadline, flood, flag, exited = started + limits.wall_time_s, limits.max_output_mb * (1 << 20), "", False
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and not flag:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(min(remaining, 0.05)):
                chunk = os.read(key.fd, _CHUNK)
                if not chunk:
                    selector.unregister(key.fd)
                streams[key.fd].add(chunk)
            if sum(stream.total for stream in streams.values()) > flood:
                flag = f"printed more than {limits.max_output_mb:g} MB (the output limit): stopped"
            if not exited and _exited(proc, time.monotonic()):
                exited = True  # what it left running in its process group goes with it; read what is left in
                _kill_group(proc)  # the pipes, but do not wait for a process that escaped the group and holds them
                deadline = min(deadline, time.monotonic() + 0.2)
    if not (flag or exited or _exited(proc, deadline)):
        flag = f"timed out after {limits.wall_time_s:g} s (the wall-clock limit)"
    _kill_group(proc)  # before reaping it: until then its pid, the group's id, cannot have gone to another process
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return out, err, flag


def _exited(proc: subprocess.Popen, deadline: float) -> bool:
    """Whether ``proc`` has ended (waiting for it until ``deadline``), without reaping it."""
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _ending(code: int, stderr: _Capture, limits: SandboxLimits, iso: Isolation) -> str:
    """One line for a non-zero exit status: the signal and the limit it points to, or the error's last line."""
    if code < 0:
        name = signal.Signals(-code).name
        hint = {signal.SIGXCPU: f"the CPU time limit, {limits.cpu_time_s} s", signal.SIGSEGV: "a segmentation fault",
                signal.SIGXFSZ: f"the file size limit, {limits.file_size_mb} MB"}.get(signal.Signals(-code))
        return f"killed by {name}" + (f" ({hint})" if hint else "")
    lines = [line for line in stderr.data.decode("utf-8", "replace").splitlines() if line.strip()]
    last = lines[-1].strip()[: limits.max_output_chars] if lines else ""
    if last.startswith("MemoryError"):
        last += f" (the memory limit, {limits.memory_mb} MB)"
    elif "[Errno 27]" in last:
        last += f" (the file size limit, {limits.file_size_mb} MB)"
    elif "[Errno 28]" in last and iso.bwrap:
        last += f" (each tmpfs of the sandbox holds {2 * limits.file_size_mb} MB)"
    return f"exit code {code}" + (f": {last}" if last else "")
