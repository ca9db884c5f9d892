# Google Compute Engine images for the worker and tooling roles (GCP sites have a
# managed HA VPN gateway, so no gateway image).
#
# Each role's image is a stock Ubuntu 24.04 image provisioned by images/provision (the same
# scripts cloud-init runs on a stock image), in the image family <image_name>-<role>: resinfra
# boots projects/<project>/global/images/family/<image_name>-<role>, the family's newest image
# at the time a machine is created.
#
#   packer init images/gcp
#   packer build -var-file=my.pkrvars.hcl images/gcp

variable "project_id" {
  type        = string
  description = "Project the images go to (the site's images.project, by default the site's project)."
}

variable "zone" {
  type        = string
  default     = "europe-west3-a"
  description = "Zone of the temporary build VM."
}

variable "machine_type" {
  type        = string
  default     = "e2-small"
  description = "Machine type of the temporary build VM."
}

variable "base_image_family" {
  type        = string
  default     = "ubuntu-2404-lts-amd64"
  description = "Stock image family the build starts from (project ubuntu-os-cloud): the one resinfra's stock mode boots."
}

variable "image_name" {
  type        = string
  default     = "resinfra"
  description = "Image set name: families are <image_name>-<role>, matched by the site's images.name."
}

variable "build_id" {
  type        = string
  default     = ""
  description = "Suffix of the image names and label resinfra-build; a UTC timestamp when empty."
}

locals {
  provision_dir = "${path.root}/../provision"
  # Per role: the first 16 hex digits of the sha256 of provision.sh, lib.sh and <role>.sh, the
  # digest resinfra computes (resinfra/images.py) and provision.sh records on the machine.
  provision_digest = {
    for role in ["worker", "tooling"] :
    role => substr(sha256(join("", [for f in ["provision.sh", "lib.sh", "${role}.sh"] : file("${local.provision_dir}/${f}")])), 0, 16)
  }
  build_id = var.build_id != "" ? var.build_id : formatdate("YYYYMMDDhhmmss", timestamp())
  labels = {
    for role in ["worker", "tooling"] :
    role => {
      resinfra-image     = var.image_name
      resinfra-role      = role
      resinfra-provision = local.provision_digest[role]
      resinfra-build     = local.build_id
    }
  }
}

source "googlecompute" "ubuntu" {
  project_id              = var.project_id
  zone                    = var.zone
  machine_type            = var.machine_type
  source_image_family     = var.base_image_family
  source_image_project_id = ["ubuntu-os-cloud"]
  disk_size               = 20
  disk_type               = "pd-balanced"
  ssh_username            = "packer"
  # resinfra's VMs boot with Secure Boot, vTPM and integrity monitoring (Shielded VM); an image
  # made from the build VM's disk keeps the Ubuntu image's UEFI_COMPATIBLE guest OS feature.
  enable_secure_boot          = true
  enable_vtpm                 = true
  enable_integrity_monitoring = true
}

build {
  name = "resinfra"

  source "googlecompute.ubuntu" {
    name         = "worker"
    image_family = "${var.image_name}-worker"
    image_name   = "${var.image_name}-worker-${local.build_id}"
    image_labels = local.labels["worker"]
  }

  source "googlecompute.ubuntu" {
    name         = "tooling"
    image_family = "${var.image_name}-tooling"
    image_name   = "${var.image_name}-tooling-${local.build_id}"
    image_labels = local.labels["tooling"]
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
