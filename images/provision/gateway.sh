# shellcheck shell=bash
# Role gateway: the strongSwan VM of a Hetzner or Proxmox site (or one of its pair). Its swanctl.conf is pushed
# by the mesh after first boot (swanctl --load-all; a pair's active VM loads it); charon runs from the start, empty.

install_packages prometheus-node-exporter strongswan-swanctl charon-systemd libstrongswan-standard-plugins keepalived curl jq
# keepalived runs only on a gateway pair's VMs (gateways: 2), once its configuration is pushed; curl and jq are its
# notify script's (the Hetzner Cloud API).
disable_services prometheus-node-exporter keepalived

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
# Retransmissions (strongSwan docs, "Retransmission": the n-th waits timeout * base^n): 2 s
# growing by 1.5, four times, declare a silent peer dead about 26 s after dead-peer detection
# starts (10 s of silence), instead of about 165 s with the defaults (4 s, 1.8, five times):
# a dead Azure instance's tunnel and route go after about 36 s, and traffic moves to the other.
install_file /etc/strongswan.d/resinfra.conf 0644 <<'CONF'
# Written by resinfra (images/provision/gateway.sh): routes through XFRM interfaces for route-based tunnels; retransmissions.
charon {
    retransmit_timeout = 2.0
    retransmit_base = 1.5
    retransmit_tries = 4
    plugins {
        kernel-netlink {
            install_routes_xfrmi = yes
        }
    }
}
CONF
