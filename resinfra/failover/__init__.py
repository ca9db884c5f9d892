"""Redundant gateways: a site's two strongSwan VMs, keepalived between them, and what moves when one dies."""
