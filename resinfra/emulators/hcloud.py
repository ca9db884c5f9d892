"""Hetzner Cloud as pulumi-hcloud (Terraform-bridged terraform-provider-hcloud) presents it."""

from resinfra.emulators.package import Package, TypeRules

# Names are unique per project for every hcloud resource kind: the API answers
# `uniqueness_error` (https://docs.hetzner.cloud/reference/cloud#errors).
_UNIQUE_NAME = "name"

PACKAGE = Package(
    name="hcloud",
    sdk_module="pulumi_hcloud",
    bridged=True,
    types={
        # terraform-provider-hcloud internal/server/resource.go: image, location, datacenter,
        # user_data and ssh_keys are ForceNew; server_type, name, labels, firewalls update in place.
        "hcloud:index/server:Server": TypeRules(force_new=frozenset({"image", "location", "datacenter", "userData", "sshKeys"}), unique_input=_UNIQUE_NAME),
        # internal/sshkey/resource.go: public_key is ForceNew (the API cannot change a key).
        "hcloud:index/sshKey:SshKey": TypeRules(force_new=frozenset({"publicKey"}), unique_input=_UNIQUE_NAME),
        # internal/primaryip/resource.go: type, datacenter/location and assignee_type are ForceNew.
        "hcloud:index/primaryIp:PrimaryIp": TypeRules(force_new=frozenset({"type", "datacenter", "location", "assigneeType"}), unique_input=_UNIQUE_NAME),
        # internal/floatingip/resource.go: type and home_location are ForceNew; server_id is Optional+Computed (the
        # program never sets it: the gateway pair's failover assigns the address through the API).
        "hcloud:index/floatingIp:FloatingIp": TypeRules(force_new=frozenset({"type", "homeLocation"}), unique_input=_UNIQUE_NAME),
        "hcloud:index/network:Network": TypeRules(unique_input=_UNIQUE_NAME),
        "hcloud:index/firewall:Firewall": TypeRules(unique_input=_UNIQUE_NAME),
        # The API has no update for subnets and routes (add/delete actions only), so the
        # provider marks every argument ForceNew (internal/network/resource_subnet.go, resource_route.go).
        "hcloud:index/networkSubnet:NetworkSubnet": TypeRules(force_new=frozenset({"networkId", "type", "networkZone", "ipRange", "vswitchId"})),
        "hcloud:index/networkRoute:NetworkRoute": TypeRules(force_new=frozenset({"networkId", "destination", "gateway"})),
    },
)
