#!/usr/bin/env bash
# Last step of every Packer build: the image must boot as a new machine, which cloud-init then
# sets up with that machine's own user-data (users, keys, addresses). Not run by cloud-init.
#
# Usage: finalize-image.sh [--azure]
#   --azure   also deprovision the Azure agent (removes the build user; Packer's azure-arm
#             builder requires it as the last command)
set -euo pipefail

apt-get -q clean
# Every machine gets its own host keys and machine id, and cloud-init treats the next boot as
# a first boot.
rm -f /etc/ssh/ssh_host_*
cloud-init clean --logs --seed --machine-id
if [[ ${1:-} == --azure ]]; then
  /usr/sbin/waagent -force -deprovision+user
fi
sync
