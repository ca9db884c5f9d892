"""Proxmox VE as pulumi-proxmoxve (Terraform-bridged bpg/terraform-provider-proxmox) presents it."""

from resinfra.emulators.package import Package, TypeRules

PACKAGE = Package(
    name="proxmoxve",
    sdk_module="pulumi_proxmoxve",
    bridged=True,
    # A resource's node (and datastore for files) is where it lives: moving it is a new one.
    identity_inputs=frozenset({"nodeName"}),
    types={
        # bpg proxmoxtf/resource/file.go: every argument of a file (datastore, content type,
        # source_raw) is ForceNew: Proxmox has no API to rewrite a stored snippet.
        "proxmoxve:index/fileLegacy:FileLegacy": TypeRules(force_new=frozenset({"datastoreId", "contentType", "sourceRaw", "sourceFile"})),
        # proxmoxtf/resource/vm/vm.go: vm_id, initialization.user_data_file_id and
        # initialization.user_account.username are ForceNew; disks, network devices and the other
        # initialization settings update in place (a reboot applies them).
        "proxmoxve:index/vmLegacy:VmLegacy": TypeRules(
            force_new=frozenset({"vmId", "initialization.userDataFileId", "initialization.userAccount.username"}), unique_input="vmId"
        ),
        # proxmoxtf/resource/firewall: rules and options are rewritten in place; the VM they belong to is identity.
        "proxmoxve:firewall/rulesLegacy:RulesLegacy": TypeRules(force_new=frozenset({"vmId", "containerId"})),
        "proxmoxve:firewall/optionsLegacy:OptionsLegacy": TypeRules(force_new=frozenset({"vmId", "containerId"})),
    },
)
