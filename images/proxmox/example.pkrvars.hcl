# Copy to my.pkrvars.hcl and adjust; the password (or $PROXMOX_TOKEN) from the environment.
proxmox_url   = "https://pve.example.org:8006/api2/json"
username      = "packer@pve"
node          = "pve1"
base_template = "ubuntu-2404-cloudinit"
bridge        = "vmbr0"
storage_pool  = "local-lvm"
template_vm_ids = {
  worker  = 9001
  gateway = 9002
  tooling = 9003
}
