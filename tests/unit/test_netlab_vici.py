"""The lab's reading of a charon's VICI answers (resinfra/netlab/charon_state.py): installed children, loaded connections,
and a charon that does not answer. The live check is tests/integration/test_mesh_tunnels.py."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from resinfra.netlab.charon_state import CharonUnreachable, installed_children, loaded_connections, stream
from resinfra.netlab.lab import Lab
from resinfra.netlab.process import LabError


def child(name: str, uniqueid: int, state: bytes = b"INSTALLED", bytes_in: bytes = b"0") -> dict[str, Any]:
    """A child-sas entry as the vici package returns it (strongSwan's vici README, "list-sa"; swanctl --raw of 5.9.8)."""
    return {
        "name": name.encode(),
        "uniqueid": str(uniqueid).encode(),
        "reqid": b"1",
        "state": state,
        "mode": b"TUNNEL",
        "protocol": b"ESP",
        "spi-in": b"c1d2e3f4",
        "bytes-in": bytes_in,
        "packets-in": b"3",
        "bytes-out": b"840",
        "packets-out": b"10",
        "local-ts": [b"10.10.0.0/24"],
        "remote-ts": [b"10.20.0.0/24", b"10.21.0.0/24"],
    }


def ike_sa(state: bytes, *children: dict[str, Any]) -> dict[str, Any]:
    return {
        "uniqueid": b"4",
        "version": b"2",
        "state": state,
        "local-host": b"203.0.113.10",
        "tasks-queued": [],
        "child-sas": {f"{c['name'].decode()}-{c['uniqueid'].decode()}": c for c in children},
    }


LIST_SA_EVENTS = [
    {"hetzner-gcp": ike_sa(b"ESTABLISHED", child("hetzner-gcp", 7, bytes_in=b"1200"), child("hetzner-gcp", 9), child("other", 8, state=b"REKEYED"))},
    {"hetzner-azure": ike_sa(b"CONNECTING", child("hetzner-azure", 11))},
    {"hetzner-proxmox": ike_sa(b"ESTABLISHED")},
]

LIST_CONN_EVENTS = [
    {
        "hetzner-gcp": {
            "local_addrs": [b"203.0.113.10"],
            "version": b"IKEv2",
            "local-1": {"class": b"pre-shared key"},
            "children": {"hetzner-gcp": {"mode": b"TUNNEL", "local-ts": [b"10.10.0.0/24"]}, "bypass": {"mode": b"PASS"}},
        }
    },
    {"hetzner-azure": {"children": {"a": {"mode": b"TUNNEL"}, "b": {"mode": b"TUNNEL"}}}},
    {"hetzner-idle": {"children": {}}},
]


def test_installed_children_of_established_ike_sas_decoded_with_duplicates() -> None:
    children = installed_children(LIST_SA_EVENTS)
    assert [(c["connection"], c["name"], c["uniqueid"]) for c in children] == [("hetzner-gcp", "hetzner-gcp", "7"), ("hetzner-gcp", "hetzner-gcp", "9")]
    first = children[0]
    assert (first["bytes-in"], first["bytes-out"], first["packets-in"], first["state"]) == ("1200", "840", "3", "INSTALLED")
    assert (first["local-ts"], first["remote-ts"]) == ("[10.10.0.0/24]", "[10.20.0.0/24 10.21.0.0/24]")
    assert all(isinstance(value, str) for c in children for value in c.values())


def test_loaded_connections_count_their_tunnel_children() -> None:
    assert loaded_connections(LIST_CONN_EVENTS) == {"hetzner-gcp": 1, "hetzner-azure": 2, "hetzner-idle": 0}


def test_a_missing_socket_is_no_children_and_a_lab_error_naming_the_charon(tmp_path: Path) -> None:
    lab = Lab("vtest", tmp_path)
    with pytest.raises(CharonUnreachable):
        stream(lab.vici_socket("hetzner"), "list-sas")
    assert lab.child_sas("hetzner") == []
    with pytest.raises(LabError, match=r"charon of hetzner: list-conns over .*charon\.vici"):
        lab.loaded("hetzner")


def test_a_charon_that_never_answers_times_out(tmp_path: Path) -> None:
    path = tmp_path / "charon.vici"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()  # accepted by the kernel, never read: a hung charon
        started = time.monotonic()
        with pytest.raises(CharonUnreachable, match="timed out"):
            stream(path, "list-sas", timeout=0.3)
        assert time.monotonic() - started < 3
