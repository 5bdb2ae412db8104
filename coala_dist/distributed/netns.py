"""A private network for runs on one machine: only a loopback interface, so nothing listens beyond loopback.

Ray 2.60 binds its GCS, raylet and worker servers to every interface, whatever node address it is given, and a
Reverb server listens on `[::]:port` without authentication. For the launches that run on one machine (`inprocess`,
`local`) `coala train` therefore moves its own process, before any thread or child exists, into a new network
namespace (Linux; with a new user namespace when it is not root, so no privilege is needed) that holds only a loopback
interface. Every process it starts (Ray's servers, the actor and learner processes, the reaper) inherits that
namespace: they reach each other over loopback, and from the machine's real interfaces a port scan finds nothing of
the run. Files are untouched (same mount namespace), so workdirs, the compilation cache and TensorBoard logs work as
before; anything that needs the network (a remote `gs://` workdir, a Ray cluster) keeps the shared network.

`isolate_network` tries the whole sequence in a forked child first: a namespace whose loopback cannot be brought up
(e.g. where unprivileged user namespaces get no capabilities) is never entered by the run itself, since a process
cannot leave it again.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: interface name, then the flags (a short) in the union

NETWORK_MODES = ("auto", "isolated", "shared")
LOOPBACK_NODE_ADDRESS = "127.0.0.2"  # the Ray node's address in a private network (any 127/8 address is loopback)
ISOLATED_ENV = "COALA_NETWORK_ISOLATED"  # set to "1" in an isolated run (its child processes read it)


class IsolationUnavailableError(RuntimeError):
    """This platform or process cannot get a private network namespace; the message says why in one line."""


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        code = ctypes.get_errno()
        raise IsolationUnavailableError(f"unshare() failed: {os.strerror(code)} ({errno.errorcode.get(code, code)})")


def _bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0)))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))


def _enter_private_network() -> None:
    """unshare + identity uid/gid maps (unprivileged) + loopback up, in this process."""
    uid, gid = os.geteuid(), os.getegid()
    _unshare(CLONE_NEWNET if uid == 0 else CLONE_NEWUSER | CLONE_NEWNET)
    if uid != 0:  # keep the same ids inside the user namespace (files keep their owner)
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    try:
        _bring_up_loopback()
    except OSError as error:
        raise IsolationUnavailableError(f"cannot bring up the loopback interface: {error.strerror}") from None


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def isolate_network() -> None:
    """Moves this process into a private network namespace holding only an active loopback interface.

    Must run before any thread starts (the kernel refuses a new user namespace to a threaded process, and a network
    namespace would only apply to the calling thread). Tried first in a forked child, so a failure leaves this
    process on the shared network.

    Raises:
      IsolationUnavailableError: not Linux, threads already running, or the kernel refused (the message says which).
    """
    if not sys.platform.startswith("linux"):
        raise IsolationUnavailableError(f"network namespaces are Linux-only (this is {sys.platform})")
    if _threads() != 1:
        raise IsolationUnavailableError(f"the process already runs {_threads()} threads")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the trial: report one line, never return into the caller's code
        os.close(read_end)
        try:
            _enter_private_network()
            message = b""
        except Exception as error:  # noqa: BLE001 -- any failure is reported to the parent as one line
            message = str(error).encode()
        os.write(write_end, message)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        trial = pipe.read().decode()
    os.waitpid(pid, 0)
    if trial:
        raise IsolationUnavailableError(trial)
    _enter_private_network()
    os.environ[ISOLATED_ENV] = "1"


def is_isolated() -> bool:
    """Whether this process runs in a private network made by `isolate_network` (its own or its parent's)."""
    return os.environ.get(ISOLATED_ENV) == "1"


def choose(mode: str, launch: str, workdir: str | None) -> bool:
    """Whether a run isolates its network, from `--network` (auto | isolated | shared), the launch and the workdir.

    auto: isolated for the one-machine launches (`inprocess`, `local`) with a local workdir on Linux, shared otherwise
    (elsewhere there are no network namespaces: auto stays quiet, `isolated` fails in `isolate_network`).

    Raises:
      ValueError: one line, for `isolated` with a launch or workdir that needs the network.
    """
    if mode not in NETWORK_MODES:
        raise ValueError(f"--network={mode} is invalid: choose one of {', '.join(NETWORK_MODES)}")
    needs_network = None
    if launch == "ray":
        needs_network = "--launch=ray runs on a Ray cluster"
    elif workdir is not None and "://" in workdir:
        needs_network = f"the workdir {workdir} is remote"
    if mode == "isolated" and needs_network:
        raise ValueError(f"--network=isolated is impossible here: {needs_network} and needs the network")
    return mode == "isolated" or (mode == "auto" and needs_network is None and sys.platform.startswith("linux"))
