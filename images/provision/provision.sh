#!/usr/bin/env bash
# Provision this machine for one resinfra role: everything every machine of the role needs.
#
# The one provisioning source: Packer runs it while building a role's image, and cloud-init
# runs it at first boot of a stock Ubuntu image (the user-data carries these files). What is
# particular to one machine (users, keys, addresses, routes) stays in its user-data.
#
# Usage: provision.sh [--list] worker|gateway|tooling
#   --list   print what the role installs, one line per item, and change nothing
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export RESINFRA_PROVISION_LIST=0
if [[ ${1:-} == --list ]]; then
  RESINFRA_PROVISION_LIST=1
  shift
fi
role=${1:-}
case $role in
  worker | gateway | tooling) ;;
  *)
    echo "usage: provision.sh [--list] worker|gateway|tooling" >&2
    exit 64
    ;;
esac

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
# shellcheck source=/dev/null  # one of worker.sh, gateway.sh, tooling.sh (each is checked on its own)
. "$here/$role.sh"

if ! _listing; then
  # What this machine (or image) was provisioned as: role and the digest of the three files.
  install -d -m 0755 /etc/resinfra
  printf 'role=%s\nsource=%s\n' "$role" "$(cat "$here/provision.sh" "$here/lib.sh" "$here/$role.sh" | sha256sum | cut -c1-16)" >/etc/resinfra/provisioned
fi
