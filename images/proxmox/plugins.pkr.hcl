# Plugins for current Packer (`packer init images/proxmox`). Kept apart from proxmox.pkr.hcl so
# that file also validates alone with Packer releases that predate required_plugins.
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    proxmox = {
      source  = "github.com/hashicorp/proxmox"
      version = ">= 1.2.0"
    }
  }
}
