# Hetzner Cloud snapshots for the worker, gateway and tooling roles.
#
# Each role's snapshot is a stock Ubuntu 24.04 server provisioned by images/provision (the
# same scripts cloud-init runs on a stock image) and labelled so resinfra finds it:
# resinfra-image=<image_name>, resinfra-role=<role> (the most recent match wins).
#
#   packer init images/hcloud
#   HCLOUD_TOKEN=... packer build -var-file=my.pkrvars.hcl images/hcloud

variable "hcloud_token" {
  type        = string
  default     = env("HCLOUD_TOKEN")
  sensitive   = true
  description = "API token of the Hetzner Cloud project the snapshots go to (default: $HCLOUD_TOKEN)."
}

variable "location" {
  type        = string
  default     = "nbg1"
  description = "Location of the temporary build server; snapshots are usable in every location."
}

variable "server_type" {
  type        = string
  default     = "cx23"
  description = "Server type of the temporary build server (a snapshot fits every type with a disk at least as large)."
}

variable "base_image" {
  type        = string
  default     = "ubuntu-24.04"
  description = "Stock image the build starts from: the one resinfra's stock mode boots."
}

variable "image_name" {
  type        = string
  default     = "resinfra"
  description = "Image set name: the resinfra-image label, matched by the site's images.name."
}

variable "build_id" {
  type        = string
  default     = ""
  description = "Label resinfra-build of this build (pin it with the site's images.selector); a UTC timestamp when empty."
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
  labels = {
    for role in ["worker", "gateway", "tooling"] :
    role => {
      resinfra-image     = var.image_name
      resinfra-role      = role
      resinfra-provision = local.provision_digest[role]
      resinfra-build     = local.build_id
      resinfra-base      = var.base_image
    }
  }
}

source "hcloud" "ubuntu" {
  token        = var.hcloud_token
  location     = var.location
  server_type  = var.server_type
  image        = var.base_image
  ssh_username = "root"
}

build {
  name = "resinfra"

  source "hcloud.ubuntu" {
    name            = "worker"
    snapshot_name   = "${var.image_name}-worker-${local.build_id}"
    snapshot_labels = local.labels["worker"]
  }

  source "hcloud.ubuntu" {
    name            = "gateway"
    snapshot_name   = "${var.image_name}-gateway-${local.build_id}"
    snapshot_labels = local.labels["gateway"]
  }

  source "hcloud.ubuntu" {
    name            = "tooling"
    snapshot_name   = "${var.image_name}-tooling-${local.build_id}"
    snapshot_labels = local.labels["tooling"]
  }

  provisioner "file" {
    source      = local.provision_dir
    destination = "/tmp/"
  }

  provisioner "shell" {
    inline = [
      # The build server's own first boot (apt runs among others) must be over first.
      "cloud-init status --wait >/dev/null || test $? -eq 2",
      "bash /tmp/provision/provision.sh ${source.name}",
      "bash /tmp/provision/finalize-image.sh",
    ]
  }
}
