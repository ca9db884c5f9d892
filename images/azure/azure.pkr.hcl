# Azure managed images (and, optionally, Azure Compute Gallery versions) for the worker and
# tooling roles (Azure sites have a managed VNet gateway, so no gateway image).
#
# Each role's image is a stock Ubuntu 24.04 image provisioned by images/provision (the same
# scripts cloud-init runs on a stock image), named <image_name>-<role> in resource_group.
# With gallery set, a new version of the gallery image definition <image_name>-<role> too
# (create the gallery and the definitions once: images/README.md).
#
#   packer init images/azure
#   packer build -force -var-file=my.pkrvars.hcl images/azure
#   (-force replaces the managed images of a previous build: their names are fixed)

variable "subscription_id" {
  type        = string
  default     = env("ARM_SUBSCRIPTION_ID")
  description = "Subscription of the images (default: $ARM_SUBSCRIPTION_ID)."
}

variable "client_id" {
  type        = string
  default     = env("ARM_CLIENT_ID")
  description = "Service principal (default: $ARM_CLIENT_ID); leave client_id and client_secret empty to use the Azure CLI login."
}

variable "client_secret" {
  type        = string
  default     = env("ARM_CLIENT_SECRET")
  sensitive   = true
  description = "Secret of the service principal (default: $ARM_CLIENT_SECRET)."
}

variable "tenant_id" {
  type        = string
  default     = env("ARM_TENANT_ID")
  description = "Tenant of the service principal (default: $ARM_TENANT_ID)."
}

variable "resource_group" {
  type        = string
  description = "Existing resource group of the images (the site's images.resourceGroup); keep it out of any stack."
}

variable "location" {
  type        = string
  default     = "westeurope"
  description = "Region of the build VM and the managed images (the site's location)."
}

variable "vm_size" {
  type        = string
  default     = "Standard_B2s"
  description = "Size of the temporary build VM."
}

variable "image_name" {
  type        = string
  default     = "resinfra"
  description = "Image set name: images are <image_name>-<role>, matched by the site's images.name."
}

variable "gallery" {
  type        = string
  default     = ""
  description = "Azure Compute Gallery in resource_group to publish a version to (the site's images.gallery); none when empty."
}

variable "build_id" {
  type        = string
  default     = ""
  description = "Tag resinfra-build; a UTC timestamp when empty. The gallery version is YYYY.MMDD.hhmm of the build time."
}

locals {
  provision_dir = "${path.root}/../provision"
  # Per role: the first 16 hex digits of the sha256 of provision.sh, lib.sh and <role>.sh, the
  # digest resinfra computes (resinfra/images.py) and provision.sh records on the machine.
  provision_digest = {
    for role in ["worker", "tooling"] :
    role => substr(sha256(join("", [for f in ["provision.sh", "lib.sh", "${role}.sh"] : file("${local.provision_dir}/${f}")])), 0, 16)
  }
  build_time      = timestamp()
  build_id        = var.build_id != "" ? var.build_id : formatdate("YYYYMMDDhhmmss", local.build_time)
  gallery_version = formatdate("YYYY.MMDD.hhmm", local.build_time)
  tags = {
    for role in ["worker", "tooling"] :
    role => {
      resinfra-image     = var.image_name
      resinfra-role      = role
      resinfra-provision = local.provision_digest[role]
      resinfra-build     = local.build_id
    }
  }
}

source "azure-arm" "ubuntu" {
  subscription_id = var.subscription_id
  client_id       = var.client_id
  client_secret   = var.client_secret
  tenant_id       = var.tenant_id
  # Without a service principal: the Azure CLI login (az login).
  use_azure_cli_auth = var.client_id == ""
  location           = var.location
  vm_size            = var.vm_size
  os_type            = "Linux"
  # The stock image resinfra's stock mode boots.
  image_publisher                   = "Canonical"
  image_offer                       = "ubuntu-24_04-lts"
  image_sku                         = "server"
  managed_image_resource_group_name = var.resource_group
}

build {
  name = "resinfra"

  source "azure-arm.ubuntu" {
    name               = "worker"
    managed_image_name = "${var.image_name}-worker"
    azure_tags         = local.tags["worker"]
    dynamic "shared_image_gallery_destination" {
      for_each = var.gallery == "" ? [] : [var.gallery]
      content {
        subscription        = var.subscription_id
        resource_group      = var.resource_group
        gallery_name        = shared_image_gallery_destination.value
        image_name          = "${var.image_name}-worker"
        image_version       = local.gallery_version
        replication_regions = [var.location]
      }
    }
  }

  source "azure-arm.ubuntu" {
    name               = "tooling"
    managed_image_name = "${var.image_name}-tooling"
    azure_tags         = local.tags["tooling"]
    dynamic "shared_image_gallery_destination" {
      for_each = var.gallery == "" ? [] : [var.gallery]
      content {
        subscription        = var.subscription_id
        resource_group      = var.resource_group
        gallery_name        = shared_image_gallery_destination.value
        image_name          = "${var.image_name}-tooling"
        image_version       = local.gallery_version
        replication_regions = [var.location]
      }
    }
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
      # Last: deprovisions the Azure agent and removes the build user.
      "bash /tmp/provision/finalize-image.sh --azure",
    ]
  }
}
