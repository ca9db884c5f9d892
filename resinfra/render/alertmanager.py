"""alertmanager.yml: node and site alerts to the healer, everything to the optional notification webhook."""

from __future__ import annotations

from typing import Any

from resinfra.render.monitoring import HEALER_SCOPES, MonitoringPlan
from resinfra.render.prometheus import seconds
from resinfra.render.yamltext import dump_yaml

HEALER_RECEIVER = "healer"
NOTIFY_RECEIVER = "notify"
DISCARD_RECEIVER = "discard"


def alertmanager_config(plan: MonitoringPlan, notification_url: str | None) -> dict[str, Any]:
    """The configuration as data (see :func:`render_alertmanager_config`)."""
    t, layout = plan.timings, plan.layout
    healer_route = {
        "receiver": HEALER_RECEIVER,
        "matchers": [f'scope=~"{"|".join(s.value for s in HEALER_SCOPES)}"'],
        # One notification per node: the healer acts on each node separately.
        "group_by": ["alertname", "site", "node"],
        "group_wait": seconds(t.healer_group_wait),
        "group_interval": seconds(t.healer_group_interval),
        "repeat_interval": seconds(t.healer_repeat_interval),
        # Go on matching: humans hear about the same alerts through the route below.
        "continue": True,
    }
    routes: list[dict[str, Any]] = [healer_route]
    if notification_url:
        # A matched child route hides the root's receiver, so notifications need their own route.
        routes.append({"receiver": NOTIFY_RECEIVER})
    receivers: list[dict[str, Any]] = [
        {
            "name": HEALER_RECEIVER,
            "webhook_configs": [
                {
                    "url": layout.healer_url,
                    "send_resolved": True,
                    # The token file is the Pulumi secret pushed readable by the service user only.
                    "http_config": {"authorization": {"type": "Bearer", "credentials_file": layout.healer_token_file}},
                }
            ],
        },
        {"name": DISCARD_RECEIVER},
    ]
    if notification_url:
        receivers.append({"name": NOTIFY_RECEIVER, "webhook_configs": [{"url": notification_url, "send_resolved": True}]})
    return {
        "route": {
            "receiver": NOTIFY_RECEIVER if notification_url else DISCARD_RECEIVER,
            "group_by": ["alertname", "site"],
            "group_wait": seconds(t.notify_group_wait),
            "group_interval": seconds(t.notify_group_interval),
            "repeat_interval": seconds(t.notify_repeat_interval),
            "routes": routes,
        },
        # No inhibit rules: NodeDown is already held back at the rule for a site that is
        # unreachable, and an inhibition would also swallow the healer's "resolved" for a
        # NodeDown that fired just before its site went dark.
        "receivers": receivers,
    }


def render_alertmanager_config(plan: MonitoringPlan, notification_url: str | None) -> str:
    """alertmanager.yml.

    + plan: the monitoring plan (timings, where the healer listens, the token file)
    + notification_url: the notification webhook (a secret: the rendered text is then a
      secret too and is pushed readable by the service user only), or None

    Example: ``render_alertmanager_config(plan, None)`` routes node and site alerts to
    ``http://127.0.0.1:9797/alerts`` and discards the rest.
    """
    return "# Rendered by resinfra: Alertmanager on the tooling VM.\n" + dump_yaml(alertmanager_config(plan, notification_url))
