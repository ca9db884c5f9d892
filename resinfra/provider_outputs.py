"""What the providers compute for the resources and invokes the program uses: one set of rules
behind the offline mocks (``resinfra.offline``) and the engine's cloud emulators (``resinfra.emulators``).

Each rule gives a resource its id and the outputs the program reads (addresses, ids, names)
the way the provider does: hcloud ids are integers, Azure ids are ARM paths and azure-native
echoes the name, servers and addresses get public IPs. Ids and addresses come from an
:class:`Allocator`: per run for the mocks, per stack and kept on disk for the emulators.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

PUBLIC_RANGE = ipaddress.IPv4Network("100.64.0.0/10")
"""Fake public addresses come from shared address space: clearly not anyone's real address."""
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"

_AZURE_NAME_INPUT = {"VirtualMachine": "vmName"}
_PASSWORD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _hash32(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


@dataclass
class Allocator:
    """The ids and public addresses a cloud has handed out.

    A number or address in ``retired`` was held by something deleted: clouds do not hand the
    same server id out again, and an ephemeral address released by a deleted machine is not
    the one its replacement gets (the mocks never delete, so they never retire anything).
    """

    ids: set[int] = field(default_factory=set)
    addresses: dict[str, str] = field(default_factory=dict)
    retired_addresses: set[str] = field(default_factory=set)

    def public_ip(self, key: str) -> str:
        """A stable fake public address for ``key`` (hash, then probe past collisions)."""
        if key in self.addresses:
            return self.addresses[key]
        taken = set(self.addresses.values()) | self.retired_addresses
        n = _hash32(key)
        while True:
            address = str(PUBLIC_RANGE.network_address + 1 + n % (PUBLIC_RANGE.num_addresses - 2))
            if address not in taken:
                self.addresses[key] = address
                return address
            n += 1

    def release_ip(self, key: str) -> None:
        """``key``'s address goes back to the cloud, never to be given out again here."""
        address = self.addresses.pop(key, None)
        if address is not None:
            self.retired_addresses.add(address)

    def next_id(self, name: str) -> str:
        """A stable integer id for ``name``: runs that differ elsewhere give a resource the same id."""
        n = _hash32(name) % 900_000_000 + 100_000_000
        while n in self.ids:
            n += 1
        self.ids.add(n)
        return str(n)


def resource_outputs(alloc: Allocator, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The id and outputs of a new resource of type ``typ`` named ``name`` (Pulumi's name) with ``inputs`` (wire names)."""
    out = dict(inputs)
    package = typ.split(":")[0]
    if typ.startswith("pulumi:providers:"):
        return f"{name}-provider-id", out
    rule = _RULES.get(package)
    if rule is None:
        return f"{name}-id", out
    return rule(alloc, typ, name, out)


def _random(alloc: Allocator, typ: str, name: str, out: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if typ == "random:index/randomPassword:RandomPassword":
        # Stable per name, of the requested length, from the allowed alphabet: a re-run
        # yields the same value, so triggers that hash configs stay put.
        length = int(out.get("length", 16))
        seed = hashlib.sha256(f"mock-password:{name}".encode()).digest()
        while len(seed) < length:
            seed += hashlib.sha256(seed).digest()
        out["result"] = "".join(_PASSWORD_ALPHABET[b % len(_PASSWORD_ALPHABET)] for b in seed[:length])
    return f"{name}-id", out


def _hcloud(alloc: Allocator, typ: str, name: str, out: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    # hcloud ids are integers (the SDK wants Input[int] for network_id and friends).
    ident = alloc.next_id(name)
    if typ == "hcloud:index/server:Server":
        out["ipv4Address"] = alloc.public_ip(name)
        out["status"] = "running"
    if typ in ("hcloud:index/primaryIp:PrimaryIp", "hcloud:index/floatingIp:FloatingIp"):
        out["ipAddress"] = alloc.public_ip(name)
    return ident, out


def _gcp(alloc: Allocator, typ: str, name: str, out: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kind = typ.split(":")[-1]
    physical = out.get("name", name)
    ident = f"projects/mock-project/{kind.lower()}s/{physical}"
    out["selfLink"] = f"https://www.googleapis.com/compute/v1/{ident}"
    if typ == "gcp:compute/instance:Instance":
        for nic in out.get("networkInterfaces", []):
            for access in nic.get("accessConfigs", []):
                access.setdefault("natIp", alloc.public_ip(name))  # a reserved address is kept
        out["instanceId"] = alloc.next_id(name)
    if typ == "gcp:compute/haVpnGateway:HaVpnGateway":
        out["vpnInterfaces"] = [{"id": i, "ipAddress": alloc.public_ip(f"{name}-{i}")} for i in (0, 1)]
    if typ == "gcp:compute/address:Address":
        out["address"] = alloc.public_ip(name)
    return ident, out


def _azure(alloc: Allocator, typ: str, name: str, out: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    _, module, kind = typ.split(":")
    key = _AZURE_NAME_INPUT.get(kind, kind[0].lower() + kind[1:] + "Name")
    key = re.sub(r"IP", "Ip", key)
    physical = out.get(key, name)
    out["name"] = physical  # azure-native returns the resource's name
    group = out.get("resourceGroupName", physical)
    if kind == "ResourceGroup":
        ident = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{physical}"
    else:
        parent = out.get("virtualNetworkName")
        plural = kind[0].lower() + kind[1:] + ("es" if kind.endswith("s") else "s")
        path = f"virtualNetworks/{parent}/subnets/{physical}" if kind == "Subnet" and parent else f"{plural}/{physical}"
        ident = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.{module.capitalize()}/{path}"
    out["id"] = ident
    if kind == "PublicIPAddress":
        out["ipAddress"] = alloc.public_ip(name)
    return ident, out


def _proxmox(alloc: Allocator, typ: str, name: str, out: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if typ == "proxmoxve:index/fileLegacy:FileLegacy":
        raw = out.get("sourceRaw", {})
        return f"{out.get('datastoreId')}:snippets/{raw.get('fileName', name)}", out
    if typ == "proxmoxve:index/vmLegacy:VmLegacy":
        return str(out.get("vmId", alloc.next_id(name))), out
    return alloc.next_id(name), out


_RULES = {"random": _random, "hcloud": _hcloud, "gcp": _gcp, "azure-native": _azure, "proxmoxve": _proxmox}


def invoke_result(alloc: Allocator, token: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """What the provider answers to the invoke ``token`` with ``args`` (None: not one the program makes)."""
    found = image_lookup(alloc, token, args)
    if found is not None:
        return found
    if token == "azure-native:authorization:getClientConfig":
        return {"subscriptionId": SUBSCRIPTION, "tenantId": SUBSCRIPTION, "clientId": SUBSCRIPTION, "objectId": SUBSCRIPTION}
    return None


def image_lookup(alloc: Allocator, token: str, query: dict[str, Any]) -> dict[str, Any] | None:
    """Packer-built images, found as the providers would find them (stable ids per query)."""
    if token == "hcloud:index/getImage:getImage":
        # An hcloud snapshot: an integer id, the labels the selector asked for.
        labels = dict(term.split("=", 1) for term in str(query.get("withSelector", "")).split(",") if "=" in term)
        return {"id": int(alloc.next_id(f"image:{query.get('withSelector')}")), "type": "snapshot", "labels": labels, "mostRecent": query.get("mostRecent")}
    group = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{query.get('resourceGroupName')}/providers/Microsoft.Compute"
    if token == "azure-native:compute:getImage":
        return {"id": f"{group}/images/{query['imageName']}", "name": query["imageName"], "location": "westeurope"}
    if token == "azure-native:compute:getGalleryImage":
        name = query["galleryImageName"]
        return {
            "id": f"{group}/galleries/{query['galleryName']}/images/{name}",
            "name": name,
            "location": "westeurope",
            "osType": "Linux",
            "osState": "Generalized",
        }
    return None
