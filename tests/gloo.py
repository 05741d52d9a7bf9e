"""For tests that run two gloo ranks on this machine (``torch.multiprocessing.spawn``)."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it), for the ranks' ``init_method``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
