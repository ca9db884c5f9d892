"""Resource-argument fixtures for every policy: (policy, resource type, inputs, stack) that pass or violate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STRONG_SWANCTL = """\
connections {
    gcp {
        version = 2
        proposals = aes256gcm16-prfsha384-ecp384
        children {
            gcp {
                esp_proposals = aes256gcm16-ecp384
            }
        }
    }
}
"""
WEAK_SWANCTL = STRONG_SWANCTL.replace("aes256gcm16-prfsha384-ecp384", "aes128-sha1-modp1024").replace("version = 2", "version = 1")

AZURE_STRONG_POLICY = {
    "ikeEncryption": "GCMAES256",
    "ikeIntegrity": "SHA384",
    "dhGroup": "ECP384",
    "ipsecEncryption": "GCMAES256",
    "ipsecIntegrity": "GCMAES256",
    "pfsGroup": "ECP384",
    "saLifeTimeSeconds": 3600,
    "saDataSizeKilobytes": 102400000,
}
GCP_STRONG_SUITE = {
    "phase1": {"encryptions": ["AES-GCM-16-256"], "prves": ["PRF-HMAC-SHA2-384"], "dhs": ["Group-20"]},
    "phase2": {"encryptions": ["AES-GCM-16-256"], "pfs": ["Group-20"]},
}
LABELS = {"resinfra-stack": "dev", "resinfra-site": "hetzner"}


@dataclass(frozen=True)
class Case:
    id: str
    policy: str
    type: str
    props: dict[str, Any]
    violates: bool
    stack: str = "dev"
    provider_props: dict[str, Any] | None = None


def _hcloud_rule(port: str, source: str) -> dict[str, Any]:
    return {"rules": [{"direction": "in", "protocol": "tcp", "port": port, "sourceIps": [source]}], "labels": LABELS}


def _nsg_rule(port: str, source: str, access: str = "Allow") -> dict[str, Any]:
    return {
        "securityRules": [
            {
                "name": "r",
                "direction": "Inbound",
                "access": access,
                "protocol": "Tcp",
                "sourceAddressPrefixes": [source],
                "destinationPortRange": port,
            }
        ]
    }


CASES: list[Case] = [
    # ---- no-public-admin-ports
    Case("gcp-ssh-from-office", "no-public-admin-ports", "gcp:compute/firewall:Firewall",
         {"direction": "INGRESS", "sourceRanges": ["198.51.100.0/24"], "allows": [{"protocol": "tcp", "ports": ["22"]}]}, False),
    Case("gcp-ike-from-world", "no-public-admin-ports", "gcp:compute/firewall:Firewall",
         {"direction": "INGRESS", "sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "udp", "ports": ["500"]}]}, False),
    Case("gcp-ssh-from-world", "no-public-admin-ports", "gcp:compute/firewall:Firewall",
         {"direction": "INGRESS", "sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["22"]}]}, True),
    Case("gcp-grafana-in-a-range-no-source", "no-public-admin-ports", "gcp:compute/firewall:Firewall",
         {"allows": [{"protocol": "tcp", "ports": ["2000-4000"]}]}, True),
    Case("azure-ssh-from-office", "no-public-admin-ports", "azure-native:network:NetworkSecurityGroup", _nsg_rule("22", "198.51.100.0/24"), False),
    Case("azure-deny-from-internet", "no-public-admin-ports", "azure-native:network:NetworkSecurityGroup", _nsg_rule("*", "Internet", "Deny"), False),
    Case("azure-ssh-from-internet", "no-public-admin-ports", "azure-native:network:NetworkSecurityGroup", _nsg_rule("22", "Internet"), True),
    Case("azure-standalone-rule-all-ports-from-star", "no-public-admin-ports", "azure-native:network:SecurityRule",
         {"direction": "Inbound", "access": "Allow", "protocol": "*", "sourceAddressPrefix": "*", "destinationPortRange": "*"}, True),
    Case("hcloud-ssh-from-office", "no-public-admin-ports", "hcloud:index/firewall:Firewall", _hcloud_rule("22", "198.51.100.0/24"), False),
    Case("hcloud-prometheus-from-world", "no-public-admin-ports", "hcloud:index/firewall:Firewall", _hcloud_rule("9090", "0.0.0.0/0"), True),
    Case("hcloud-ssh-from-world-v6", "no-public-admin-ports", "hcloud:index/firewall:Firewall", _hcloud_rule("any", "::/0"), True),
    Case("proxmox-ssh-from-office", "no-public-admin-ports", "proxmoxve:firewall/rulesLegacy:RulesLegacy",
         {"rules": [{"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22", "source": "198.51.100.0/24"}]}, False),
    Case("proxmox-ssh-without-source", "no-public-admin-ports", "proxmoxve:firewall/rulesLegacy:RulesLegacy",
         {"rules": [{"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22"}]}, True),
    Case("proxmox-ssh-macro-from-world", "no-public-admin-ports", "proxmoxve:firewall/rulesLegacy:RulesLegacy",
         {"rules": [{"type": "in", "action": "ACCEPT", "macro": "SSH", "source": "0.0.0.0/0"}]}, True),
    # The whole internet in two halves (and a public /8 in sixteen pieces): sources are judged together, not one by one.
    Case("gcp-ssh-from-two-halves", "no-public-admin-ports", "gcp:compute/firewall:Firewall",
         {"direction": "INGRESS", "sourceRanges": ["0.0.0.0/1", "128.0.0.0/1"], "allows": [{"protocol": "tcp", "ports": ["22"]}]}, True),
    Case("azure-ssh-from-two-halves", "no-public-admin-ports", "azure-native:network:SecurityRule",
         {"direction": "Inbound", "access": "Allow", "protocol": "Tcp", "sourceAddressPrefixes": ["0.0.0.0/1", "128.0.0.0/1"], "destinationPortRange": "22"}, True),
    Case("hcloud-ssh-from-a-slash-8-in-pieces", "no-public-admin-ports", "hcloud:index/firewall:Firewall",
         {"rules": [{"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": [f"11.{16 * i}.0.0/12" for i in range(16)]}], "labels": LABELS}, True),
    Case("hcloud-ssh-from-private-ranges", "no-public-admin-ports", "hcloud:index/firewall:Firewall",
         {"rules": [{"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": ["10.0.0.0/8", "172.16.0.0/12"]}], "labels": LABELS}, False),
    Case("proxmox-ssh-from-two-halves", "no-public-admin-ports", "proxmoxve:firewall/rulesLegacy:RulesLegacy",
         {"rules": [{"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22", "source": "0.0.0.0/1,128.0.0.0/1"}]}, True),
    Case("proxmox-input-drop", "no-public-admin-ports", "proxmoxve:firewall/optionsLegacy:OptionsLegacy", {"enabled": True, "inputPolicy": "DROP"}, False),
    Case("proxmox-input-accept", "no-public-admin-ports", "proxmoxve:firewall/optionsLegacy:OptionsLegacy", {"enabled": True, "inputPolicy": "ACCEPT"}, True),
    # ---- strong-ipsec-crypto
    Case("azure-custom-strong-policy", "strong-ipsec-crypto", "azure-native:network:VirtualNetworkGatewayConnection",
         {"connectionType": "IPsec", "connectionProtocol": "IKEv2", "ipsecPolicies": [AZURE_STRONG_POLICY]}, False),
    Case("azure-sha1-dhgroup2", "strong-ipsec-crypto", "azure-native:network:VirtualNetworkGatewayConnection",
         {"connectionType": "IPsec", "connectionProtocol": "IKEv2", "ipsecPolicies": [{**AZURE_STRONG_POLICY, "ikeIntegrity": "SHA1", "dhGroup": "DHGroup2"}]}, True),
    Case("azure-ikev1", "strong-ipsec-crypto", "azure-native:network:VirtualNetworkGatewayConnection",
         {"connectionType": "IPsec", "connectionProtocol": "IKEv1", "ipsecPolicies": [AZURE_STRONG_POLICY]}, True),
    Case("azure-default-policy", "strong-ipsec-crypto", "azure-native:network:VirtualNetworkGatewayConnection", {"connectionType": "IPsec"}, True),
    Case("gcp-tunnel-strong-suite", "strong-ipsec-crypto", "gcp:compute/vPNTunnel:VPNTunnel", {"ikeVersion": 2, "cipherSuite": GCP_STRONG_SUITE}, False),
    Case("gcp-tunnel-no-suite", "strong-ipsec-crypto", "gcp:compute/vPNTunnel:VPNTunnel", {"ikeVersion": 2}, True),
    Case("gcp-tunnel-ikev1", "strong-ipsec-crypto", "gcp:compute/vPNTunnel:VPNTunnel", {"ikeVersion": 1, "cipherSuite": GCP_STRONG_SUITE}, True),
    Case("gcp-tunnel-3des-group2", "strong-ipsec-crypto", "gcp:compute/vPNTunnel:VPNTunnel",
         {"cipherSuite": {**GCP_STRONG_SUITE, "phase2": {"encryptions": ["3DES-CBC"], "integrities": ["HMAC-SHA1-96"], "pfs": ["Group-2"]}}}, True),
    Case("swanctl-strong", "strong-ipsec-crypto", "command:remote:Command", {"create": "sudo bash -s", "stdin": f"cat > /etc/swanctl/conf.d/mesh.conf <<'EOF'\n{STRONG_SWANCTL}EOF\n"}, False),
    Case("swanctl-sha1-modp1024-ikev1", "strong-ipsec-crypto", "command:remote:Command", {"create": "sudo bash -s", "stdin": WEAK_SWANCTL}, True),
    Case("swanctl-default-esp", "strong-ipsec-crypto", "command:remote:Command",
         {"stdin": STRONG_SWANCTL.replace("esp_proposals = aes256gcm16-ecp384", "esp_proposals = default")}, True),
    Case("command-without-swanctl", "strong-ipsec-crypto", "command:remote:Command", {"create": "sudo systemctl reload prometheus"}, False),
    # ---- static-public-addresses
    Case("azure-static-ip", "static-public-addresses", "azure-native:network:PublicIPAddress", {"publicIPAllocationMethod": "Static"}, False),
    Case("azure-dynamic-ip", "static-public-addresses", "azure-native:network:PublicIPAddress", {"publicIPAllocationMethod": "Dynamic"}, True),
    Case("hcloud-primary-ip-kept", "static-public-addresses", "hcloud:index/primaryIp:PrimaryIp", {"autoDelete": False}, False),
    Case("hcloud-primary-ip-auto-delete", "static-public-addresses", "hcloud:index/primaryIp:PrimaryIp", {"autoDelete": True}, True),
    Case("hcloud-gateway-on-primary-ip", "static-public-addresses", "hcloud:index/server:Server",
         {"labels": {**LABELS, "resinfra-role": "gateway"}, "publicNets": [{"ipv4Enabled": True, "ipv4": 12345}]}, False),
    Case("hcloud-gateway-automatic-ip", "static-public-addresses", "hcloud:index/server:Server",
         {"labels": {**LABELS, "resinfra-role": "gateway"}, "publicNets": [{"ipv4Enabled": True}]}, True),
    Case("hcloud-worker-automatic-ip", "static-public-addresses", "hcloud:index/server:Server",
         {"labels": {**LABELS, "resinfra-role": "worker"}, "publicNets": [{"ipv4Enabled": True}]}, False),
    Case("gcp-tooling-reserved", "static-public-addresses", "gcp:compute/instance:Instance",
         {"labels": {"resinfra-role": "tooling"}, "networkInterfaces": [{"accessConfigs": [{"natIp": "100.64.0.9"}]}]}, False),
    Case("gcp-tooling-ephemeral", "static-public-addresses", "gcp:compute/instance:Instance",
         {"labels": {"resinfra-role": "tooling"}, "networkInterfaces": [{"accessConfigs": [{}]}]}, True),
    Case("proxmox-gateway-dhcp", "static-public-addresses", "proxmoxve:index/vmLegacy:VmLegacy",
         {"tags": ["resinfra-role-gateway"], "initialization": {"ipConfigs": [{"ipv4": {"address": "dhcp"}}]}}, True),
    Case("proxmox-gateway-fixed", "static-public-addresses", "proxmoxve:index/vmLegacy:VmLegacy",
         {"tags": ["resinfra-role-gateway"], "initialization": {"ipConfigs": [{"ipv4": {"address": "203.0.113.18/28"}}]}}, False),
    # ---- vm-size-allow-list
    Case("hcloud-dev-small", "vm-size-allow-list", "hcloud:index/server:Server", {"serverType": "cx23"}, False),
    Case("hcloud-dev-huge", "vm-size-allow-list", "hcloud:index/server:Server", {"serverType": "ccx63"}, True),
    Case("hcloud-prod-allows-ccx", "vm-size-allow-list", "hcloud:index/server:Server", {"serverType": "ccx23"}, False, stack="prod"),
    Case("gcp-unknown-stack-gets-dev-list", "vm-size-allow-list", "gcp:compute/instance:Instance", {"machineType": "n2-standard-4"}, True, stack="feature-x"),
    Case("gcp-path-form", "vm-size-allow-list", "gcp:compute/instance:Instance", {"machineType": "zones/europe-west3-a/machineTypes/e2-small"}, False),
    Case("azure-prod-no-burstable", "vm-size-allow-list", "azure-native:compute:VirtualMachine", {"hardwareProfile": {"vmSize": "Standard_B1s"}}, True, stack="prod"),
    Case("azure-dev-b1s", "vm-size-allow-list", "azure-native:compute:VirtualMachine", {"hardwareProfile": {"vmSize": "Standard_B1s"}}, False),
    Case("proxmox-dev-too-big", "vm-size-allow-list", "proxmoxve:index/vmLegacy:VmLegacy", {"cpu": {"cores": 8}, "memory": {"dedicated": 16384}}, True),
    Case("proxmox-dev-fits", "vm-size-allow-list", "proxmoxve:index/vmLegacy:VmLegacy", {"cpu": {"cores": 2}, "memory": {"dedicated": 2048}}, False),
    # ---- resinfra-labels
    Case("hcloud-server-labelled", "resinfra-labels", "hcloud:index/server:Server", {"labels": {**LABELS, "resinfra-role": "worker"}}, False),
    Case("hcloud-server-no-role", "resinfra-labels", "hcloud:index/server:Server", {"labels": LABELS}, True),
    Case("hcloud-network-no-labels", "resinfra-labels", "hcloud:index/network:Network", {"ipRange": "10.10.0.0/16"}, True),
    Case("gcp-address-provider-default-labels", "resinfra-labels", "gcp:compute/address:Address", {"addressType": "EXTERNAL"}, False,
         provider_props={"defaultLabels": {"resinfra-stack": "dev", "resinfra-site": "gcp"}}),
    Case("gcp-tunnel-unlabelled", "resinfra-labels", "gcp:compute/vPNTunnel:VPNTunnel", {"ikeVersion": 2}, True),
    Case("azure-label-of-another-stack", "resinfra-labels", "azure-native:network:PublicIPAddress", {"tags": {"resinfra-stack": "prod", "resinfra-site": "azure"}}, True),
    Case("proxmox-vm-tags", "resinfra-labels", "proxmoxve:index/vmLegacy:VmLegacy",
         {"tags": ["resinfra-role-worker", "resinfra-site-proxmox", "resinfra-stack-dev"]}, False),
    Case("gcp-router-cannot-carry-labels", "resinfra-labels", "gcp:compute/router:Router", {"name": "r"}, False),
]  # fmt: skip
