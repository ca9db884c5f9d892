"""Machine images: the one provisioning source per role (``images/provision``) and which image each machine boots.

A role's provisioning is ``images/provision/provision.sh <role>`` (with ``lib.sh`` and
``<role>.sh``). Packer runs it while building the role's image (``images/<provider>``); in
stock mode the program puts the same three files in the machine's user-data and cloud-init
runs the same command at first boot. Everything here is pure: the site components turn a
:class:`RoleImage` into provider inputs (and lookups).
"""

from __future__ import annotations

import enum
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from resinfra.addressing import Role
from resinfra.config import ROLE_LABEL, AzureSite, GcpSite, HetznerSite, ImageMode, Provider, ProxmoxSite, Site, StackConfig, image_roles
from resinfra.render.cloud_init import Provisioning, WriteFile

_T = TypeVar("_T")

PROVISION_DIR = Path(__file__).resolve().parent.parent / "images" / "provision"
"""The provisioning source, next to the Packer templates (the program runs from its checkout)."""
BOOT_DIR = "/usr/local/lib/resinfra/provision"
"""Where a stock machine's user-data writes the provisioning files."""
ENTRY = "provision.sh"
LIBRARY = "lib.sh"
DIGEST_LENGTH = 16
"""Hex digits of the source digest: fits hcloud and GCE label values (63 characters)."""

STOCK_IMAGES = {
    Provider.HETZNER: "ubuntu-24.04",
    Provider.GCP: "ubuntu-os-cloud/ubuntu-2404-lts-amd64",
    Provider.AZURE: "Canonical:ubuntu-24_04-lts:server:latest",
}
"""Stock Ubuntu 24.04 LTS per provider (Azure: publisher:offer:sku:version); Proxmox clones ``templateVmId``."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a role's provisioning source."""

    name: str
    text: str


@functools.cache
def source_files(role: Role) -> tuple[SourceFile, ...]:
    """The files that provision ``role``, in digest order: ``provision.sh``, ``lib.sh``, ``<role>.sh``."""
    names = (ENTRY, LIBRARY, f"{role.value}.sh")
    missing = [n for n in names if not (PROVISION_DIR / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{PROVISION_DIR}: {', '.join(missing)} missing; resinfra runs from its checkout, images/ included")
    return tuple(SourceFile(n, (PROVISION_DIR / n).read_text()) for n in names)


def source_digest(role: Role) -> str:
    """Digest of ``role``'s provisioning source: the first hex digits of the sha256 of the three files.

    The Packer templates label each image with the same digest (``resinfra-provision``) and
    ``provision.sh`` records it in ``/etc/resinfra/provisioned``, so an image shows which
    source it was built from. Example: ``source_digest(Role.WORKER)`` is 16 hex digits.
    """
    digest = hashlib.sha256("".join(f.text for f in source_files(role)).encode())
    return digest.hexdigest()[:DIGEST_LENGTH]


def boot_provisioning(role: Role) -> Provisioning:
    """The provisioning source as user-data files and the command that runs it.

    Example: ``boot_provisioning(Role.WORKER).command`` is
    ``("bash", "/usr/local/lib/resinfra/provision/provision.sh", "worker")``.
    """
    files = tuple(WriteFile(f"{BOOT_DIR}/{f.name}", f.text, "0755" if f.name == ENTRY else "0644") for f in source_files(role))
    return Provisioning(files=files, command=("bash", f"{BOOT_DIR}/{ENTRY}", role.value))


class ImageSource(enum.StrEnum):
    """How the program names a machine's image to its provider."""

    STOCK = "stock"
    OVERRIDE = "override"
    HCLOUD_SELECTOR = "hcloud-label-selector"
    """The most recent hcloud snapshot matching the selector (looked up at each preview and update)."""
    GCE_FAMILY = "gce-image-family"
    """The family's newest image when a machine is created."""
    AZURE_MANAGED_IMAGE = "azure-managed-image"
    AZURE_GALLERY_IMAGE = "azure-gallery-image"
    """The gallery image definition's latest version when a machine is created."""
    PROXMOX_TEMPLATE = "proxmox-template"


@dataclass(frozen=True)
class RoleImage:
    """The image the machines of one role on one site boot."""

    role: Role
    mode: ImageMode
    source: ImageSource
    reference: str
    """What the provider gets (an image name, path, id or template id), or the hcloud selector."""
    lookup: tuple[str, ...] = ()
    """Azure lookups: (resource group, image name) or (resource group, gallery, image definition)."""

    @property
    def full_user_data(self) -> bool:
        """Whether the machine's user-data runs the role's provisioning (stock mode)."""
        return self.mode is ImageMode.STOCK


def image_name(images_name: str, role: Role) -> str:
    """Name of a role's image, family, image definition or template: ``<image set>-<role>`` (as the Packer templates name them)."""
    return f"{images_name}-{role.value}"


def _for_role(mapping: Mapping[Any, _T], role: Role) -> _T | None:
    """``mapping[role]`` for a config map keyed by role names."""
    return next((value for key, value in mapping.items() if key == role.value), None)


def role_image(site: Site, role: Role) -> RoleImage:
    """Which image ``role``'s machines on ``site`` boot (pure: lookups happen in the site component).

    + site: the site's config (``images`` decides the mode, lookups and overrides)
    + role: a role the site runs

    Example: a Hetzner site with ``images: {mode: packer}`` gives workers the most recent
    snapshot labelled ``resinfra-image=resinfra,resinfra-role=worker``.
    """
    images = site.images
    mode = images.mode
    override = _for_role(images.overrides, role)
    if override is not None:
        return RoleImage(role, mode, ImageSource.OVERRIDE, str(override))
    name = image_name(images.name, role)
    if mode is ImageMode.STOCK:
        stock = str(site.template_vm_id) if isinstance(site, ProxmoxSite) else STOCK_IMAGES[Provider(site.provider)]
        return RoleImage(role, mode, ImageSource.STOCK, stock)
    if isinstance(site, HetznerSite):
        terms = [f"resinfra-image={images.name}", f"{ROLE_LABEL}={role.value}", *([site.images.selector] if site.images.selector else [])]
        return RoleImage(role, mode, ImageSource.HCLOUD_SELECTOR, ",".join(terms))
    if isinstance(site, GcpSite):
        project = site.images.project or site.project
        return RoleImage(role, mode, ImageSource.GCE_FAMILY, f"projects/{project}/global/images/family/{name}")
    if isinstance(site, AzureSite):
        group = site.images.resource_group
        assert group is not None, "checked by config.check_stack"
        if site.images.gallery:
            path = f"resourceGroups/{group}/providers/Microsoft.Compute/galleries/{site.images.gallery}/images/{name}"
            return RoleImage(role, mode, ImageSource.AZURE_GALLERY_IMAGE, path, (group, site.images.gallery, name))
        return RoleImage(role, mode, ImageSource.AZURE_MANAGED_IMAGE, f"resourceGroups/{group}/providers/Microsoft.Compute/images/{name}", (group, name))
    template = _for_role(site.images.templates, role)
    assert template is not None, "checked by config.check_stack"
    return RoleImage(role, mode, ImageSource.PROXMOX_TEMPLATE, str(template))


def site_images(cfg: StackConfig, site: Site) -> dict[Role, RoleImage]:
    """The image of every role ``site`` runs."""
    return {Role(role): role_image(site, Role(role)) for role in image_roles(cfg, site)}
