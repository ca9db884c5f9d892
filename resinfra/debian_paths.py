"""Where Debian installs the programs resinfra starts itself: constants, so a command checks that they are installed
without loading the code that renders their configuration."""

from __future__ import annotations

NODE_EXPORTER_BIN = "/usr/bin/prometheus-node-exporter"
"""Debian's prometheus-node-exporter package (its unit runs ``/usr/bin/prometheus-node-exporter $ARGS``)."""
