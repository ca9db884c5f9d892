"""What a charon reports over its VICI socket: loaded connections and installed CHILD_SAs.

The lab polls every charon every half second; asking with strongSwan's own Python client costs a socket round trip,
where the ``swanctl`` binary cost a process that loads its plugins and config each time (about 22 ms of CPU).
Loading the config stays on ``swanctl --load-all``, the tool the gateways use (:meth:`resinfra.netlab.lab.Lab.load`).

Message and field names: strongSwan's ``src/libcharon/plugins/vici/README.md`` (``list-conns`` streams one
``list-conn`` event per connection, ``list-sas`` one ``list-sa`` event per IKE_SA with its ``child-sas``). The
``vici`` package returns every value as bytes, sections as dicts and lists as lists (``vici/protocol.py``,
``Message.deserialize``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vici import Session
from vici.exception import CommandException, DeserializationException, EventUnknownException, SessionException

TIMEOUT = 5.0
"""Seconds to connect and to wait for each answer: a charon that hangs fails the poll instead of hanging it."""

EVENTS = {"list-conns": "list-conn", "list-sas": "list-sa"}
"""The streamed commands the lab reads and the event each streams."""

Event = Mapping[str, Any]
"""One streamed VICI event as the ``vici`` package returns it: names to bytes, lists or nested sections."""


class CharonUnreachable(Exception):
    """The charon's socket is missing, refuses, times out or answers something that is not VICI."""


def stream(socket_path: Path, command: str, timeout: float = TIMEOUT) -> list[Event]:
    """Every event a streamed VICI ``command`` (``list-conns``, ``list-sas``) sends, read to the end."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            # vici.Session keeps a socket's timeout for connecting and for the first byte of every answer
            # (its docstring, and vici/protocol.py Transport._recvall).
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            return list(Session(sock).streamed_request(command, EVENTS[command]))
    except (OSError, SessionException, CommandException, EventUnknownException, DeserializationException) as error:
        raise CharonUnreachable(f"{command} over {socket_path}: {error!r}") from error


def text(value: object) -> str:
    """A VICI value as ``swanctl --raw`` prints it (``vici_message.c``, ``dump``): bytes decoded, a list's items
    between brackets, separated by spaces."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list):
        return f"[{' '.join(text(item) for item in value)}]"
    return str(value)


def loaded_connections(events: Iterable[Event]) -> dict[str, int]:
    """Loaded connections and their number of tunnel-mode children, from ``list-conn`` events (a child's ``mode`` is
    charon's ``ipsec_mode_names``: ``TUNNEL``)."""
    conns: dict[str, int] = {}
    for event in events:
        for name, conn in event.items():
            children = conn.get("children", {})
            conns[name] = sum(1 for child in children.values() if text(child.get("mode", b"")) == "TUNNEL")
    return conns


def installed_children(events: Iterable[Event]) -> list[dict[str, str]]:
    """Installed CHILD_SAs of ESTABLISHED IKE_SAs, from ``list-sa`` events: the IKE_SA's connection as ``connection``
    and the child's fields (``name``, ``bytes-in``, ``packets-out``, ...) as text. Duplicates (simultaneous
    initiation, rekeying) are kept."""
    children = []
    for event in events:
        for connection, ike_sa in event.items():
            if text(ike_sa.get("state", b"")) != "ESTABLISHED":
                continue
            for child in ike_sa.get("child-sas", {}).values():
                fields = {name: text(value) for name, value in child.items()}
                if fields.get("state") == "INSTALLED":
                    children.append({"connection": connection, **fields})
    return children
