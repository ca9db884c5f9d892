# shellcheck shell=bash
# Role gateway: the strongSwan VM of a Hetzner or Proxmox site. Its swanctl.conf is pushed
# by the mesh after first boot (swanctl --load-all); charon runs from the start, empty.

install_packages prometheus-node-exporter strongswan-swanctl charon-systemd libstrongswan-standard-plugins
disable_services prometheus-node-exporter

# The gateway forwards between its site and the tunnels.
install_file /etc/sysctl.d/60-resinfra-gateway.conf 0644 <<'CONF'
# Written by resinfra (images/provision/gateway.sh): the gateway forwards between its site and the tunnels.
net.ipv4.ip_forward = 1
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.all.send_redirects = 0
CONF
run_step "apply the gateway's sysctl settings" sysctl --quiet --system
