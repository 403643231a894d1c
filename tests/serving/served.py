"""Helpers of the served tests: the client calls (parekit.serving.client), and the listening sockets and
children of a process (to prove a server binds loopback only and leaves no stub behind)."""

from __future__ import annotations

import os
from pathlib import Path

from parekit.serving.client import TIMEOUT_S, client, decode, embed  # noqa: F401 (re-exported for the tests)


def listening_addresses(pids: list[int]) -> list[str]:
    """``address:port`` of every listening TCP socket the processes hold (from /proc)."""
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.is_dir() else []:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            addr, port = local.split(":")
            found.append(f"{_address(addr, width)}:{int(port, 16)}")
    return found


def _address(hexaddr: str, width: int) -> str:
    if width == 8:
        return ".".join(str(b) for b in reversed(bytes.fromhex(hexaddr)))
    import ipaddress

    raw = bytes.fromhex(hexaddr)
    addr = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    mapped = addr.ipv4_mapped  # an IPv4 address listened on through an IPv6 socket
    return str(mapped) if mapped is not None else f"[{addr}]"


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (the backend stubs of a server)."""
    kids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(proc.name))
    return kids
