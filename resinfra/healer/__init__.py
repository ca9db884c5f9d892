"""The healer: Alertmanager webhooks in (detect), a pure policy (decide), ``pulumi up --replace`` through the Automation API (act)."""
