"""swanctl.conf and bird.conf renderers: stable text, safe PSKs, and bird's own parser."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from resinfra.mesh.crypto import POLICY
from resinfra.render.bird import BirdSession, BirdSpeaker, render_bird
from resinfra.render.swanctl import SwanChild, SwanConnection, render_swanctl
from tests.conftest import require_tool

GOLDEN = Path(__file__).parent / "swanctl" / "hetzner-gateway.expected"
UPDATE = os.environ.get("RESINFRA_UPDATE_GOLDEN") == "1"
TRICKY_PSK = 'quote " brace } hash # dollar $ backslash \\ newline-free'


def connections() -> list[SwanConnection]:
    return [
        SwanConnection("hetzner-proxmox-0", "198.51.100.4", "203.0.113.18", "psk-one-" + "x" * 40, (SwanChild("net", ("10.10.48.0/20",), ("10.10.64.0/20",)),)),
        SwanConnection("azure-hetzner-0", "198.51.100.4", "192.0.2.10", TRICKY_PSK, (SwanChild("net", ("10.10.48.0/20",), ("10.10.32.0/20",)),)),
    ]


def test_golden() -> None:
    text = render_swanctl(connections())
    if UPDATE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    assert render_swanctl(list(reversed(connections()))) == text, "order of input does not matter"


def test_every_connection_retries_restarts_and_uses_the_policy() -> None:
    text = render_swanctl(connections())
    assert text.count("start_action = start") == 2 and text.count("keyingtries = 0") == 2
    assert text.count("dpd_action = restart") == 2 and text.count("close_action = start") == 2
    assert text.count(f"proposals = {POLICY.ike_proposal}") == 2 and text.count(f"esp_proposals = {POLICY.esp_proposal}") == 2


def test_psk_travels_base64_encoded() -> None:
    text = render_swanctl(connections())
    assert TRICKY_PSK not in text
    assert "secret = 0s" + base64.b64encode(TRICKY_PSK.encode()).decode() in text


@pytest.mark.parametrize("bad", ["duplicate", "empty-psk"])
def test_bad_input_is_refused(bad: str) -> None:
    conns = connections()
    if bad == "duplicate":
        conns.append(conns[0])
    else:
        conns[0] = SwanConnection("x-0", "198.51.100.4", "203.0.113.18", "", conns[0].children)
    with pytest.raises(ValueError):
        render_swanctl(conns)


def test_bird_config_parses_with_bird(tmp_path: Path) -> None:
    bird = require_tool("bird")
    session = BirdSession("gcp_azure_0", "169.254.21.2", 65515, "169.254.21.1", 64514, "10.10.47.229", "t0")
    text = render_bird(BirdSpeaker("169.254.21.2", (session,), ("10.10.32.0/20",), hold_seconds=180, keepalive_seconds=60))
    path = tmp_path / "bird.conf"
    path.write_text(text)
    result = subprocess.run([bird, "-p", "-c", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    path.write_text(text.replace("as 64514", "as"))
    assert subprocess.run([bird, "-p", "-c", str(path)], capture_output=True, text=True, check=False).returncode != 0, "the check can fail"
