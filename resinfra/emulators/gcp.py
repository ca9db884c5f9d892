"""Google Cloud as pulumi-gcp (Terraform-bridged terraform-provider-google) presents it."""

from resinfra.emulators.package import Package, TypeRules

# The compute API's resources live at projects/<project>/(global|regions/<r>|zones/<z>)/<kind>/<name>:
# those inputs are ForceNew on every compute resource of terraform-provider-google.
_IDENTITY = frozenset({"project", "region", "zone", "name", "network"})

# Resources the compute API cannot change after insert (no update or patch method besides
# labels): terraform-provider-google marks every argument but labels ForceNew (the emulator
# counts labels too: the program never changes them) (generated from Magic
# Modules' `immutable: true`, e.g. mmv1/products/compute/Route.yaml, VpnTunnel.yaml).
_IMMUTABLE = TypeRules(force_new=frozenset({"*"}))

PACKAGE = Package(
    name="gcp",
    sdk_module="pulumi_gcp",
    bridged=True,
    identity_inputs=_IDENTITY,
    types={
        "gcp:compute/route:Route": _IMMUTABLE,
        "gcp:compute/vPNTunnel:VPNTunnel": _IMMUTABLE,
        "gcp:compute/address:Address": _IMMUTABLE,
        "gcp:compute/externalVpnGateway:ExternalVpnGateway": _IMMUTABLE,
        "gcp:compute/haVpnGateway:HaVpnGateway": _IMMUTABLE,
        "gcp:compute/vPNGateway:VPNGateway": _IMMUTABLE,
        "gcp:compute/forwardingRule:ForwardingRule": _IMMUTABLE,
        "gcp:compute/routerInterface:RouterInterface": _IMMUTABLE,
        # resource_compute_instance.go: boot_disk (its image), machine placement and network
        # interfaces' networks are ForceNew; metadata, labels, machine_type update in place.
        "gcp:compute/instance:Instance": TypeRules(force_new=frozenset({"bootDisk", "networkInterfaces.*.subnetwork"})),
        # Subnetwork: ip_cidr_range can only be expanded in place (PATCH); its region and network are identity.
        "gcp:compute/subnetwork:Subnetwork": TypeRules(),
        "gcp:compute/firewall:Firewall": TypeRules(),
        "gcp:compute/router:Router": TypeRules(),
        "gcp:compute/routerPeer:RouterPeer": TypeRules(force_new=frozenset({"router", "interface"})),
    },
)
