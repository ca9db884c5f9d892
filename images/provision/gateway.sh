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

# Route-based tunnels (the two to an active-active Azure gateway) use XFRM interfaces: charon
# installs a tunnel's route through its interface while the CHILD_SA is up, and falls back to
# the other tunnel's when it goes (strongSwan kernel-netlink, install_routes_xfrmi, off by
# default). charon-systemd reads the charon section (it inherits that namespace).
install_file /etc/strongswan.d/resinfra.conf 0644 <<'CONF'
# Written by resinfra (images/provision/gateway.sh): routes through XFRM interfaces for route-based tunnels.
charon {
    plugins {
        kernel-netlink {
            install_routes_xfrmi = yes
        }
    }
}
CONF
