# shellcheck shell=bash
# Role worker: every machine that runs workloads.
#   node_exporter: Prometheus scrapes it on the machine's private address (set per machine
#     by its user-data, which then enables it); never started before that.
#   blackbox_exporter: the first worker of each site other than the resinfra VM's probes the
#     other sites; installed on every worker so any replacement can take that part, enabled
#     only by that machine's user-data.

install_packages prometheus-node-exporter prometheus-blackbox-exporter
disable_services prometheus-node-exporter prometheus-blackbox-exporter
