"""The XFRM interfaces of route-based tunnels: the script (shellcheck), the unit (systemd-analyze), the swanctl children."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from resinfra.render.swanctl import SwanChild, SwanConnection, render_swanctl
from resinfra.render.xfrm import XfrmInterface, render_xfrm_script, render_xfrm_unit
from tests.conftest import require_tool

INTERFACES = [XfrmInterface("xfrm1005", 1005), XfrmInterface("xfrm1004", 1004)]


def check(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool(command[0]), *command[1:]], capture_output=True, text=True, check=False)


def test_the_script_creates_each_interface_once_and_passes_shellcheck(tmp_path: Path) -> None:
    text = render_xfrm_script(INTERFACES)
    assert text.index("xfrm1004") < text.index("xfrm1005"), "sorted: the same interfaces give the same text"
    assert text.count("type xfrm") == 2 and "if_id 1004" in text and "if_id 1005" in text
    assert "net.ipv4.conf.xfrm1004.rp_filter=2" in text, "loose reverse-path filter: answers may come through either tunnel"
    script = tmp_path / "xfrm.sh"
    script.write_text(text)
    result = check("shellcheck", "-s", "bash", str(script))
    assert result.returncode == 0, result.stdout
    script.write_text(text.replace('"${uplink}"', "$uplink_unset"))
    assert check("shellcheck", "-s", "bash", str(script)).returncode != 0, "the check can fail"


@pytest.mark.parametrize("bad", [[], [XfrmInterface("x" * 16, 1)], [XfrmInterface("xfrm0", 0)]])
def test_bad_interfaces_are_refused(bad: list[XfrmInterface]) -> None:
    with pytest.raises(ValueError):
        render_xfrm_script(bad)


def test_the_unit_passes_systemd_analyze_without_warnings(tmp_path: Path) -> None:
    script = tmp_path / "resinfra-xfrm-interfaces"
    script.write_text(render_xfrm_script(INTERFACES))
    script.chmod(0o755)
    unit = tmp_path / "resinfra-xfrm.service"
    unit.write_text(render_xfrm_unit(str(script)))
    result = check("systemd-analyze", "verify", str(unit))
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    assert "Before=strongswan.service" in unit.read_text()
    unit.write_text(render_xfrm_unit(str(script)).replace("Type=oneshot", "Type=oneshotty"))
    assert check("systemd-analyze", "verify", str(unit)).stderr.strip(), "systemd-analyze reports a bad value"


def test_route_based_children_carry_their_interface_both_ways() -> None:
    children = (SwanChild("net", ("10.10.48.0/20",), ("10.10.32.0/20",), if_id=1004),)
    text = render_swanctl([SwanConnection("azure-hetzner-0", "198.51.100.4", "192.0.2.10", "k" * 48, children)])
    assert "if_id_in = 1004" in text and "if_id_out = 1004" in text
    plain = render_swanctl([SwanConnection("azure-hetzner-0", "198.51.100.4", "192.0.2.10", "k" * 48, (SwanChild("net", ("a",), ("b",)),))])
    assert "if_id" not in plain
