"""A private network of hosts on this machine, for partitions: one network
namespace per host, each with a veth pair whose other leg sits on a bridge in a
hub namespace; a `clients` host on the same bridge for the services and the
test itself. Every address lives inside namespaces made here; nothing is routed
anywhere else (no default route, no address in the machine's own namespace).

    net = Network.create(hosts=3)        # shopXXXX-h0..h2 + shopXXXX-clients on shopXXXX-hub
    with net.entered("clients"):         # this process (its sockets, its children) on the bridge
        ...start members in net.hosts...
        net.partition("h1")              # h1's leg down: cut off from every other host
        net.heal("h1")
    net.destroy()                        # kills what is left inside, deletes the namespaces

Linux, root and iproute2 (`ip`) only: `Network.unavailable()` says why not."""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import uuid

from tools.devstack import Host

CLONE_NEWNET = 0x40000000
SUBNET = "10.213.0"  # private; lives only inside this network's namespaces
CLIENTS_ADDRESS = f"{SUBNET}.100"


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at `fd`. The test
    process runs under eventlet, so every green thread (and every child process
    forked afterwards) follows it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


class Network:
    def __init__(self, tag: str, hosts: int):
        self.tag = tag
        self.hub = f"shop{tag}-hub"
        self.names = [f"h{i}" for i in range(hosts)] + ["clients"]
        self.addresses = {name: f"{SUBNET}.{i + 2}" for i, name in enumerate(self.names[:-1])}
        self.addresses["clients"] = CLIENTS_ADDRESS

    @staticmethod
    def unavailable() -> str | None:
        """Why partitions cannot run here (None when they can)."""
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            return "network namespaces need root"
        if shutil.which("ip") is None:
            return "no `ip` (iproute2) to make network namespaces"
        return None

    @classmethod
    def create(cls, hosts: int = 3) -> Network:
        net = cls(uuid.uuid4().hex[:4], hosts)
        try:
            net._build()
        except BaseException:
            net.destroy()
            raise
        return net

    def netns(self, name: str) -> str:
        return f"shop{self.tag}-{name}"

    def leg(self, name: str) -> str:
        """The hub-side end of the host's veth pair (interface names: 15 characters)."""
        return f"sh{self.tag}{self.names.index(name)}"

    def host(self, name: str) -> Host:
        return Host(self.addresses[name], self.netns(name))

    @property
    def hosts(self) -> list[Host]:
        """The member hosts (not `clients`), in order."""
        return [self.host(name) for name in self.names[:-1]]

    def name_of(self, address: str) -> str:
        """The host whose address `address` is (`10.213.0.3:27017`, `node@10.213.0.3` too)."""
        bare = address.rsplit("@", 1)[-1].split(":", 1)[0]
        return next(name for name, known in self.addresses.items() if known == bare)

    def _build(self) -> None:
        ip("netns", "add", self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "link", "set", "br0", "up")
        for name in self.names:
            netns = self.netns(name)
            ip("netns", "add", netns)
            ip("-n", netns, "link", "set", "lo", "up")
            ip("-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", self.leg(name),
               "netns", self.hub)
            ip("-n", self.hub, "link", "set", self.leg(name), "master", "br0", "up")
            ip("-n", netns, "addr", "add", f"{self.addresses[name]}/24", "dev", "eth0")
            ip("-n", netns, "link", "set", "eth0", "up")

    # faults
    def partition(self, name: str) -> None:
        """Cut host `name` off from every other host: its leg on the bridge goes down.
        Packets are dropped, nothing is refused: peers notice by timeouts only."""
        ip("-n", self.hub, "link", "set", self.leg(name), "down")

    def heal(self, name: str) -> None:
        ip("-n", self.hub, "link", "set", self.leg(name), "up")

    def cut_off(self) -> list[str]:
        """The hosts whose leg is down now."""
        out = ip("-n", self.hub, "-o", "link", "show", "master", "br0")
        return [name for name in self.names
                if f" {self.leg(name)}@" in f" {out}" and "state DOWN" in
                next(line for line in out.splitlines() if f" {self.leg(name)}@" in line)]

    # this process
    @contextlib.contextmanager
    def entered(self, name: str):
        """Run this process (its main thread: all of eventlet's green threads) inside
        host `name`'s namespace; back in the original one afterwards."""
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/var/run/netns/{self.netns(name)}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield self.host(name)
            finally:
                _setns(original)
        finally:
            os.close(target)
            os.close(original)

    def destroy(self) -> None:
        """SIGKILL whatever still runs inside this network's namespaces (only
        processes started in them), then delete them (the veth pairs go with them)."""
        for netns in [*map(self.netns, self.names), self.hub]:
            with contextlib.suppress(RuntimeError):
                for pid in map(int, ip("netns", "pids", netns).split()):
                    if pid != os.getpid():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(RuntimeError):
                ip("netns", "delete", netns)
