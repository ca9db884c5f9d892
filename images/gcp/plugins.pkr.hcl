# Plugins for current Packer (`packer init images/gcp`). Kept apart from gcp.pkr.hcl so that
# file also validates alone with Packer releases that predate required_plugins.
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = ">= 1.1.6"
    }
  }
}
