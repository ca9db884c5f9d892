# shellcheck shell=bash
# Role tooling: the resinfra VM (Prometheus, Alertmanager, blackbox_exporter, Grafana, and
# the healer). Installs only: every configuration is pushed by `pulumi up` after first boot
# (resinfra/render/tooling_files.py), and that push enables and starts the services.

# Grafana Labs' package signing key (grafana.com/docs/grafana/latest/setup-grafana/installation/debian/).
add_apt_source grafana B53AE77BADB630A683046005963FA27710458545 https://apt.grafana.com stable main
install_packages prometheus-node-exporter prometheus prometheus-alertmanager prometheus-blackbox-exporter grafana
# The healer runs from a virtualenv (uv is installed into one by the healer's install push).
install_packages python3-venv
# Stopped until configured: the packaged defaults would listen on every interface.
disable_services prometheus-node-exporter prometheus prometheus-alertmanager prometheus-blackbox-exporter grafana-server
