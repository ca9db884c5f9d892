"""blackbox.yml: the ICMP module every prober uses."""

from __future__ import annotations

from resinfra.render.monitoring import AlertTimings
from resinfra.render.yamltext import dump_yaml

ICMP_MODULE = "icmp"


def render_blackbox_config(timings: AlertTimings) -> str:
    """blackbox_exporter modules: IPv4 ICMP echo with a timeout below the scrape interval.

    Example: ``render_blackbox_config(AlertTimings())`` defines module ``icmp`` with a 5 s timeout.
    """
    config = {
        "modules": {
            ICMP_MODULE: {
                "prober": "icmp",
                "timeout": f"{timings.probe_timeout}s",
                # The mesh is IPv4 only: never fall back to (or wait for) IPv6.
                "icmp": {"preferred_ip_protocol": "ip4", "ip_protocol_fallback": False},
            }
        }
    }
    return "# Rendered by resinfra: blackbox_exporter probes.\n" + dump_yaml(config)
