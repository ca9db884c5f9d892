"""Every IPsec tunnel or policy uses strong crypto: IKEv2, no SHA1/MD5, no MODP768/1024/1536, no DES/3DES.

Allow-lists, not deny-lists: a value the lists do not know (a typo, a new weak
algorithm) is a violation too. Covers Azure connections (custom IPsec policies), GCP VPN
tunnels (cipher suites) and strongSwan ``swanctl.conf`` text pushed by pulumi-command.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from resinfra_policies.common import Context, Props, as_list, get

# Azure (azure-native network enums IkeEncryption, IkeIntegrity, DhGroup, IpsecEncryption,
# IpsecIntegrity, PfsGroup): DHGroup14/2048/24 are MODP-2048; PFSMM/PFS1/PFS2 and the
# "None" values are out.
AZURE_STRONG = {
    "ikeEncryption": {"AES128", "AES192", "AES256", "GCMAES128", "GCMAES256"},
    "ikeIntegrity": {"SHA256", "SHA384", "GCMAES128", "GCMAES256"},
    "dhGroup": {"DHGroup14", "DHGroup2048", "DHGroup24", "ECP256", "ECP384"},
    "ipsecEncryption": {"AES128", "AES192", "AES256", "GCMAES128", "GCMAES192", "GCMAES256"},
    "ipsecIntegrity": {"SHA256", "GCMAES128", "GCMAES192", "GCMAES256"},
    "pfsGroup": {"PFS14", "PFS2048", "PFS24", "ECP256", "ECP384"},
}
AZURE_IPSEC_CONNECTION_TYPES = {"IPsec", "Vnet2Vnet"}

# GCP Cloud VPN cipher names ("Supported IKE ciphers", cloud.google.com/network-connectivity/docs/vpn/concepts/supported-ike-ciphers).
_GCP_ENCRYPTION = {"AES-GCM-16-128", "AES-GCM-16-192", "AES-GCM-16-256", "AES-CBC-128", "AES-CBC-192", "AES-CBC-256"}
_GCP_INTEGRITY = {"HMAC-SHA2-256-128", "HMAC-SHA2-384-192", "HMAC-SHA2-512-256"}
_GCP_GROUPS = {"GROUP-14", "GROUP-15", "GROUP-16", "GROUP-19", "GROUP-20", "GROUP-21", "GROUP-31"}
GCP_STRONG = {
    ("phase1", "encryptions"): _GCP_ENCRYPTION,
    ("phase1", "integrities"): _GCP_INTEGRITY,
    ("phase1", "prves"): {"PRF-HMAC-SHA2-256", "PRF-HMAC-SHA2-384", "PRF-HMAC-SHA2-512"},
    ("phase1", "dhs"): _GCP_GROUPS,
    ("phase2", "encryptions"): _GCP_ENCRYPTION,
    ("phase2", "integrities"): _GCP_INTEGRITY,
    ("phase2", "pfs"): _GCP_GROUPS,
}
GCP_VPN_TUNNEL_TYPES = {"gcp:compute/vPNTunnel:VPNTunnel", "gcp:compute/vpnTunnel:VpnTunnel"}

# strongSwan proposal keywords (docs.strongswan.org "IKEv2 Cipher Suites").
STRONGSWAN_STRONG = {
    "aes128", "aes192", "aes256", "aes128gcm16", "aes192gcm16", "aes256gcm16", "aes128gcm128", "aes256gcm128", "chacha20poly1305",
    "sha256", "sha384", "sha512", "prfsha256", "prfsha384", "prfsha512",
    "modp2048", "modp3072", "modp4096", "modp6144", "modp8192", "ecp256", "ecp384", "ecp521", "ecp256bp", "ecp384bp", "ecp512bp",
    "curve25519", "x25519", "curve448", "x448", "esn", "noesn",
}  # fmt: skip
COMMAND_TYPES = {"command:remote:Command", "command:local:Command"}
COMMAND_TEXT_FIELDS = ("create", "update", "stdin")


def _azure_connection(props: Props) -> list[str]:
    if str(get(props, "connectionType") or "IPsec") not in AZURE_IPSEC_CONNECTION_TYPES:
        return []
    out = []
    protocol = get(props, "connectionProtocol")
    # Azure's default protocol is IKEv2; IKEv1 is refused.
    if protocol is not None and str(protocol) != "IKEv2":
        out.append(f"connectionProtocol is {protocol}: use IKEv2")
    policies = as_list(get(props, "ipsecPolicies"))
    if not policies:
        out.append("no custom ipsecPolicies: Azure's default proposals include SHA1, DHGroup2 and 3DES; set one custom policy")
    for i, policy in enumerate(policies):
        for field, strong in AZURE_STRONG.items():
            value = get(policy, field)
            if value is None or str(value) not in strong:
                out.append(f"ipsecPolicies[{i}].{field} is {value}: use one of {', '.join(sorted(strong))}")
    return out


def _gcp_tunnel(props: Props) -> list[str]:
    out = []
    version = get(props, "ikeVersion")
    if version is not None and int(float(version)) != 2:
        out.append(f"ikeVersion is {int(float(version))}: use 2")
    suite = get(props, "cipherSuite")
    if not suite:
        return [*out, "no cipherSuite: Cloud VPN then accepts its whole list, SHA1 and Group-2/5 included; set phase1 and phase2"]
    for (phase, role), strong in GCP_STRONG.items():
        values = as_list(get(suite, phase, role))
        all_gcm = all(str(v).upper().startswith("AES-GCM") for v in as_list(get(suite, phase, "encryptions")))
        if not values:
            if role == "integrities" and all_gcm and as_list(get(suite, phase, "encryptions")):
                continue  # AES-GCM carries its own integrity
            out.append(f"cipherSuite.{phase}.{role} is not set: Cloud VPN then offers its defaults; list only {', '.join(sorted(strong))}")
            continue
        weak = [str(v) for v in values if str(v).upper() not in strong]
        if weak:
            out.append(f"cipherSuite.{phase}.{role} has {', '.join(weak)}: use only {', '.join(sorted(strong))}")
    return out


# ---------------------------------------------------------------------------
# swanctl.conf

_SECTION = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*\{\s*$")
_SETTING = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*=\s*(.*?)\s*$")
_CLOSE = re.compile(r"^\s*\}\s*$")
_CONNECTIONS = re.compile(r"^\s*connections\s*\{\s*$")


def parse_swanctl_connections(text: str) -> list[dict[str, object]]:
    """Every ``connections { ... }`` block in ``text`` as nested dicts (sections -> dict, settings -> str).

    ``text`` may be a whole push script: lines outside a ``connections`` block are ignored.
    """
    blocks: list[dict[str, object]] = []
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    i = 0
    while i < len(lines):
        if not _CONNECTIONS.match(lines[i]):
            i += 1
            continue
        root: dict[str, object] = {}
        stack = [root]
        i += 1
        while i < len(lines) and stack:
            line = lines[i]
            if section := _SECTION.match(line):
                child: dict[str, object] = {}
                stack[-1][section.group(1)] = child
                stack.append(child)
            elif _CLOSE.match(line):
                stack.pop()
            elif setting := _SETTING.match(line):
                stack[-1][setting.group(1)] = setting.group(2)
            i += 1
        blocks.append(root)
    return blocks


def weak_proposal_tokens(proposals: str) -> list[str]:
    """Tokens of a strongSwan proposal list that are not strong (``default`` counts as weak)."""
    weak = []
    for proposal in proposals.split(","):
        for token in proposal.strip().lower().split("-"):
            if token and token not in STRONGSWAN_STRONG:
                weak.append(token)
    return weak


def check_swanctl(text: str) -> list[str]:
    """Violations in the ``connections`` of a swanctl.conf (or a script carrying one).

    Every connection needs ``version = 2`` and explicit strong ``proposals``; every child
    explicit strong ``esp_proposals`` (strongSwan's defaults accept SHA1).
    """
    out = []
    for block in parse_swanctl_connections(text):
        for name, conn in block.items():
            if not isinstance(conn, dict):
                continue
            if str(conn.get("version", "0")) != "2":
                out.append(f"swanctl connection {name}: version is {conn.get('version', '0 (any)')}: set version = 2")
            out += _proposal_problems(f"swanctl connection {name}: proposals", conn.get("proposals"))
            children = conn.get("children")
            for child_name, child in children.items() if isinstance(children, dict) else []:
                if isinstance(child, dict):
                    out += _proposal_problems(f"swanctl child {name}.{child_name}: esp_proposals", child.get("esp_proposals"))
    return out


def _proposal_problems(where: str, value: object) -> list[str]:
    if value is None:
        return [f"{where} not set: strongSwan's default proposals include SHA1; list strong ones (e.g. aes256gcm16-prfsha384-ecp384)"]
    weak = weak_proposal_tokens(str(value))
    return [f"{where} has {', '.join(dict.fromkeys(weak))}: use only AES(-GCM)/ChaCha20, SHA-2 and MODP>=2048/ECP groups"] if weak else []


def _command(props: Props) -> list[str]:
    texts: Iterable[object] = (get(props, f) for f in COMMAND_TEXT_FIELDS)
    return [v for text in texts if isinstance(text, str) for v in check_swanctl(text)]


def check_ipsec_crypto(resource_type: str, props: Props, context: Context) -> list[str]:
    """Violations of "every IPsec policy/tunnel uses the project's strong crypto".

    Example: an Azure connection whose ipsecPolicies[0].ikeIntegrity is ``SHA1`` gives one
    violation naming the field and the allowed values.
    """
    if resource_type == "azure-native:network:VirtualNetworkGatewayConnection":
        return _azure_connection(props)
    if resource_type in GCP_VPN_TUNNEL_TYPES:
        return _gcp_tunnel(props)
    if resource_type in COMMAND_TYPES:
        return _command(props)
    return []
