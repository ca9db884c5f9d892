# Plugins for current Packer (`packer init images/hcloud`). Kept apart from hcloud.pkr.hcl so
# that file also validates alone with Packer releases that predate required_plugins.
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    hcloud = {
      source  = "github.com/hetznercloud/hcloud"
      version = ">= 1.6.0"
    }
  }
}
