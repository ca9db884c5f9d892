"""The lab's UIs on the host: a TCP forwarder that runs inside the tooling VM's namespace with listening sockets
opened in the host's namespace.

A socket belongs to the network namespace it was created in, whatever process holds it.
``lab up`` opens ``127.0.0.1:<free port>`` on the host and hands the sockets to this
process, started with ``ip netns exec`` in the tooling VM's namespace: connections are
accepted on the host and forwarded to ``127.0.0.1:9090`` (and so on) inside the
namespace, where Prometheus, Alertmanager and the healer listen on their production
addresses. No veth, no NAT, nothing listening anywhere but the host's loopback.

Run: ``python -m resinfra.lab.forward FD=HOST:PORT ...``.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Sequence

BUFFER = 65536
CONNECT_TIMEOUT = 5.0


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` ends, then end ``sink``'s sending side (the other direction keeps going)."""
    with contextlib.suppress(OSError):
        while data := source.recv(BUFFER):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _serve_connection(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=CONNECT_TIMEOUT)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _serve(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve_connection, args=(client, target), daemon=True).start()


def parse_spec(spec: str) -> tuple[int, tuple[str, int]]:
    """``"3=127.0.0.1:9090"`` is (3, ("127.0.0.1", 9090))."""
    fd, _, target = spec.partition("=")
    host, _, port = target.rpartition(":")
    if not fd.isdigit() or not host or not port.isdigit():
        raise ValueError(f"{spec!r}: expected FD=HOST:PORT")
    return int(fd), (host, int(port))


def main(argv: Sequence[str]) -> int:
    specs = [parse_spec(a) for a in argv]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for fd, target in specs:
        listener = socket.socket(fileno=fd)
        threading.Thread(target=_serve, args=(listener, target), daemon=True).start()
        print(f"forwarding {listener.getsockname()} -> {target[0]}:{target[1]}", flush=True)
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
