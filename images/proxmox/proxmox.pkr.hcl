# Proxmox VE templates for the worker, gateway and tooling roles.
#
# Each role's template is a full clone of a cloud-init enabled Ubuntu 24.04 template (the one
# resinfra's stock mode clones, templateVmId) provisioned by images/provision (the same
# scripts cloud-init runs on a stock image), saved as a template with the VM id of the role
# in template_vm_ids: the site's images.templates lists the same ids.
#
#   packer init images/proxmox
#   PROXMOX_PASSWORD=... packer build -var-file=my.pkrvars.hcl images/proxmox
#   (a VM id that is taken fails the build: `qm destroy <id>` the previous template first;
#   resinfra's VMs are full clones and do not need it)

variable "proxmox_url" {
  type        = string
  default     = env("PROXMOX_URL")
  description = "API URL, e.g. https://pve.example.org:8006/api2/json (default: $PROXMOX_URL)."
}

variable "username" {
  type        = string
  default     = env("PROXMOX_USERNAME")
  description = "API user, e.g. packer@pve (default: $PROXMOX_USERNAME); with an API token user@realm!tokenid and the secret in $PROXMOX_TOKEN."
}

variable "password" {
  type        = string
  default     = env("PROXMOX_PASSWORD")
  sensitive   = true
  description = "Password of the API user (default: $PROXMOX_PASSWORD)."
}

variable "insecure_skip_tls_verify" {
  type        = bool
  default     = false
  description = "Accept the node's self-signed certificate."
}

variable "node" {
  type        = string
  description = "Node that builds and keeps the templates (the site's node)."
}

variable "base_template" {
  type        = string
  description = "Name of the cloud-init enabled Ubuntu 24.04 template to start from (with qemu-guest-agent, so Packer learns the build VM's address)."
}

variable "ssh_username" {
  type        = string
  default     = "ubuntu"
  description = "User with passwordless sudo that the base template's cloud-init creates."
}

variable "bridge" {
  type        = string
  default     = "vmbr0"
  description = "Bridge of the build VM's NIC: Packer reaches it over SSH there, and it downloads packages through it."
}

variable "storage_pool" {
  type        = string
  default     = "local-lvm"
  description = "Datastore of the templates' disks and cloud-init drives (the site's datastore)."
}

variable "template_vm_ids" {
  type = map(number)
  default = {
    worker  = 9001
    gateway = 9002
    tooling = 9003
  }
  description = "VM id of each role's template: the site's images.templates."
}

variable "image_name" {
  type        = string
  default     = "resinfra"
  description = "Image set name: templates are named <image_name>-<role>."
}

variable "build_id" {
  type        = string
  default     = ""
  description = "Recorded in the templates' descriptions; a UTC timestamp when empty."
}

locals {
  provision_dir = "${path.root}/../provision"
  # Per role: the first 16 hex digits of the sha256 of provision.sh, lib.sh and <role>.sh, the
  # digest resinfra computes (resinfra/images.py) and provision.sh records on the machine.
  provision_digest = {
    for role in ["worker", "gateway", "tooling"] :
    role => substr(sha256(join("", [for f in ["provision.sh", "lib.sh", "${role}.sh"] : file("${local.provision_dir}/${f}")])), 0, 16)
  }
  build_id = var.build_id != "" ? var.build_id : formatdate("YYYYMMDDhhmmss", timestamp())
  descriptions = {
    for role in ["worker", "gateway", "tooling"] :
    role => "resinfra-image=${var.image_name} resinfra-role=${role} resinfra-provision=${local.provision_digest[role]} resinfra-build=${local.build_id}"
  }
}

source "proxmox-clone" "ubuntu" {
  proxmox_url              = var.proxmox_url
  username                 = var.username
  password                 = var.password
  insecure_skip_tls_verify = var.insecure_skip_tls_verify
  node                     = var.node
  clone_vm                 = var.base_template
  full_clone               = true
  cores                    = 2
  memory                   = 2048
  os                       = "l26"
  qemu_agent               = true
  scsi_controller          = "virtio-scsi-single"
  ssh_username             = var.ssh_username
  network_adapters {
    bridge = var.bridge
    model  = "virtio"
  }
  # The templates keep a cloud-init drive: resinfra hands each clone its user-data there.
  cloud_init              = true
  cloud_init_storage_pool = var.storage_pool
}

build {
  name = "resinfra"

  source "proxmox-clone.ubuntu" {
    name                 = "worker"
    vm_id                = var.template_vm_ids["worker"]
    template_name        = "${var.image_name}-worker"
    template_description = local.descriptions["worker"]
  }

  source "proxmox-clone.ubuntu" {
    name                 = "gateway"
    vm_id                = var.template_vm_ids["gateway"]
    template_name        = "${var.image_name}-gateway"
    template_description = local.descriptions["gateway"]
  }

  source "proxmox-clone.ubuntu" {
    name                 = "tooling"
    vm_id                = var.template_vm_ids["tooling"]
    template_name        = "${var.image_name}-tooling"
    template_description = local.descriptions["tooling"]
  }

  provisioner "file" {
    source      = local.provision_dir
    destination = "/tmp/"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'"
    inline = [
      # The build VM's own first boot (apt runs among others) must be over first.
      "cloud-init status --wait >/dev/null || test $? -eq 2",
      "bash /tmp/provision/provision.sh ${source.name}",
      "bash /tmp/provision/finalize-image.sh",
    ]
  }
}
