# Plugins for current Packer (`packer init images/azure`). Kept apart from azure.pkr.hcl so
# that file also validates alone with Packer releases that predate required_plugins.
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    azure = {
      source  = "github.com/hashicorp/azure"
      version = ">= 2.1.0"
    }
  }
}
