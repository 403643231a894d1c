"""Helpers of the served tests and the load bench: a Triton HTTP client per thread, sequence decoding,
and the listening sockets of a process (to prove a server binds loopback only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

TIMEOUT_S = 60.0
"""Network timeout of every client call: a hung server fails the test instead of stalling it."""


def client(url: str):
    import tritonclient.http as http

    return http.InferenceServerClient(url, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)


def embed(cl, model: str, ids: np.ndarray, mask: np.ndarray, outputs=("sentence_embedding",)) -> dict:
    import tritonclient.http as http

    inputs = [http.InferInput("input_ids", list(ids.shape), "INT64"),
              http.InferInput("attention_mask", list(mask.shape), "INT64")]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(mask)
    result = cl.infer(model, inputs, outputs=[http.InferRequestedOutput(o) for o in outputs])
    return {o: result.as_numpy(o) for o in outputs}


def decode(cl, model: str, sequence_id: int, prompt: list[int], steps: int) -> list[int]:
    """Greedy ids of one sequence: the prompt at START, then each new token, END on the last request."""
    import tritonclient.http as http

    ids = np.array([prompt], np.int64)
    tokens: list[int] = []
    for i in range(steps):
        inp = http.InferInput("input_ids", list(ids.shape), "INT64")
        inp.set_data_from_numpy(ids)
        result = cl.infer(model, [inp], sequence_id=sequence_id, sequence_start=i == 0, sequence_end=i == steps - 1)
        token = int(result.as_numpy("next_token")[0, 0])
        tokens.append(token)
        ids = np.array([[token]], np.int64)
    return tokens


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
