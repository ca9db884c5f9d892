# shellcheck shell=bash
# The only functions a role script (worker.sh, gateway.sh, tooling.sh) changes a machine with.
#
# With RESINFRA_PROVISION_LIST=1 each function prints what it would do instead, one line per
# item ("package NAME", "service-disabled UNIT", ...): that listing is what the images contain
# and what the tests compare between the Packer and the cloud-init path.

KEYSERVER="hkp://keyserver.ubuntu.com:80"
# Port 80: egress filters that pass HTTP but not HKP's 11371 do not break the provisioning.
KEYRING_DIR=/etc/apt/keyrings
_apt_lists_fresh=0

_listing() {
  [[ ${RESINFRA_PROVISION_LIST:-0} == 1 ]]
}

_apt_get() {
  # confold: a file cloud-init wrote before the package arrived (a machine's own settings)
  # is kept, as cloud-init's own package module does. The lock timeout waits for apt runs
  # that start at boot (unattended-upgrades) instead of failing.
  DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

# install_packages NAME...: install Debian/Ubuntu packages (apt lists refreshed once per run).
install_packages() {
  if _listing; then
    printf 'package %s\n' "$@"
    return
  fi
  if [[ $_apt_lists_fresh != 1 ]]; then
    _apt_get update
    _apt_lists_fresh=1
  fi
  _apt_get install "$@"
}

# add_apt_source NAME FINGERPRINT URL SUITE COMPONENT...: an apt repository whose signing key
# is fetched by its full fingerprint (the keyserver serves the key's current self-signatures,
# so a vendor extending its key's expiry needs no change here) and refused if it differs.
add_apt_source() {
  local name=$1 fingerprint=$2 url=$3
  shift 3
  install_packages gnupg ca-certificates
  if _listing; then
    printf 'apt-source %s %s %s %s\n' "$name" "$fingerprint" "$url" "$*"
    return
  fi
  local home keyring="$KEYRING_DIR/$name.gpg" imported
  home=$(mktemp -d)
  gpg --homedir "$home" --batch --quiet --keyserver "$KEYSERVER" --recv-keys "$fingerprint"
  imported=$(gpg --homedir "$home" --batch --with-colons --fingerprint | awk -F: '$1 == "fpr" { print $10 }')
  if [[ $imported != "$fingerprint" ]]; then
    echo "resinfra: the keyserver returned key(s) ${imported//$'\n'/ } for $name, not $fingerprint" >&2
    return 1
  fi
  install -d -m 0755 "$KEYRING_DIR"
  gpg --homedir "$home" --batch --export "$fingerprint" >"$keyring.tmp"
  chmod 0644 "$keyring.tmp"
  mv "$keyring.tmp" "$keyring"
  rm -rf "$home"
  printf 'deb [signed-by=%s] %s %s\n' "$keyring" "$url" "$*" >"/etc/apt/sources.list.d/$name.list"
  _apt_lists_fresh=0
}

# disable_services UNIT...: installed, stopped and not started at boot, until a machine's own
# user-data or a configuration push enables it with its configuration.
disable_services() {
  if _listing; then
    printf 'service-disabled %s\n' "$@"
    return
  fi
  systemctl disable --now "$@"
}

# enable_services UNIT...: started now and at every boot.
enable_services() {
  if _listing; then
    printf 'service-enabled %s\n' "$@"
    return
  fi
  systemctl enable --now "$@"
}

# install_file PATH MODE < CONTENT: a file every machine of the role has (written atomically).
install_file() {
  local path=$1 mode=$2 content
  content=$(cat)
  if _listing; then
    printf 'file %s %s %s\n' "$path" "$mode" "$(printf '%s\n' "$content" | sha256sum | cut -d' ' -f1)"
    return
  fi
  install -d -m 0755 "$(dirname "$path")"
  printf '%s\n' "$content" >"$path.tmp"
  chmod "$mode" "$path.tmp"
  mv "$path.tmp" "$path"
}

# run_step DESCRIPTION COMMAND [ARG...]: any other install step (a download, a user, a venv).
run_step() {
  local description=$1
  shift
  if _listing; then
    printf 'step %s: %s\n' "$description" "$*"
    return
  fi
  echo "resinfra: $description" >&2
  "$@"
}
