"""The one crypto policy of every tunnel, spelled for strongSwan, Azure and GCP.

IKEv2 with AES-256-GCM, PRF HMAC-SHA2-384 and ECP-384 (group 20); ESP with AES-256-GCM
and PFS on ECP-384. Both clouds accept exactly this set:

- Azure custom IPsec/IKE policy (learn.microsoft.com, "Configure custom IPsec/IKE connection
  policies", algorithm table): IKEv2 encryption GCMAES256, IKEv2 integrity SHA384 (with GCM
  it is the PRF), DH group ECP384, IPsec encryption and integrity GCMAES256 (GCM needs the same
  algorithm in both), PFS group ECP384. Quick Mode SA lifetime: minimum 300 s, default
  27,000 s; data size minimum 1,024 KB, default 102,400,000 KB. The IKE (Main Mode) SA
  lifetime is fixed at 28,800 s on Azure VPN gateways.
- GCP Cloud VPN (cloud.google.com, "Supported IKE ciphers"): phase 1 AES-GCM-16-256,
  PRF-HMAC-SHA2-384, Group-20; phase 2 AES-GCM-16-256 with PFS Group-20; pinned per tunnel
  with ``cipherSuite``. Cloud VPN's lifetimes are 36,000 s (phase 1) and 10,800 s (phase 2).

Lifetimes are local in IKEv2 (each side rekeys on its own timer), so ours are chosen to
be at or below both clouds': IKE SA 28,800 s (Azure's fixed value, below GCP's 36,000 s),
CHILD SA 10,800 s (GCP's, inside Azure's 300-172,799 s range).
"""

from __future__ import annotations

from dataclasses import dataclass

IKE_VERSION = 2
IKE_REKEY_SECONDS = 28_800
CHILD_REKEY_SECONDS = 10_800
CHILD_REKEY_KILOBYTES = 102_400_000
"""Azure's default Quick Mode data size; the clouds rekey on time well before it."""
DPD_DELAY_SECONDS = 10
DPD_TIMEOUT_SECONDS = 45
"""Azure's recommended DPD timeout (30-45 s)."""

FORBIDDEN = ("sha1", "md5", "modp1024", "dhgroup2", "group-2", "pfs2", "des", "3des", "modp768", "dhgroup1", "pfs1")
"""Algorithm spellings (any product's) that must never appear in a declared policy."""


@dataclass(frozen=True)
class CryptoPolicy:
    """One suite, by role. Values are strongSwan proposal keywords."""

    ike_encryption: str = "aes256gcm16"
    ike_prf: str = "prfsha384"
    ike_dh: str = "ecp384"
    esp_encryption: str = "aes256gcm16"
    esp_pfs: str = "ecp384"

    @property
    def ike_proposal(self) -> str:
        """swanctl ``proposals``: ``aes256gcm16-prfsha384-ecp384``."""
        return f"{self.ike_encryption}-{self.ike_prf}-{self.ike_dh}"

    @property
    def esp_proposal(self) -> str:
        """swanctl ``esp_proposals``: ``aes256gcm16-ecp384`` (the DH group gives PFS)."""
        return f"{self.esp_encryption}-{self.esp_pfs}"

    def describe(self) -> str:
        """One line for ``resinfra plan``."""
        return f"IKEv{IKE_VERSION} {self.ike_proposal} / ESP {self.esp_proposal} (PFS)"


POLICY = CryptoPolicy()

# Each cloud's names for the policy's algorithms, and back: the emulated managed ends are
# configured from what the program hands the clouds, translated with these tables.
AZURE_IKE_ENCRYPTION = {"aes256gcm16": "GCMAES256"}
AZURE_IKE_INTEGRITY = {"prfsha384": "SHA384"}
AZURE_DH_GROUP = {"ecp384": "ECP384"}
AZURE_IPSEC_ENCRYPTION = {"aes256gcm16": "GCMAES256"}
AZURE_IPSEC_INTEGRITY = {"aes256gcm16": "GCMAES256"}
AZURE_PFS_GROUP = {"ecp384": "ECP384"}
GCP_ENCRYPTION = {"aes256gcm16": "AES-GCM-16-256"}
GCP_PRF = {"prfsha384": "PRF-HMAC-SHA2-384"}
GCP_DH = {"ecp384": "Group-20"}


def azure_policy(policy: CryptoPolicy = POLICY) -> dict[str, str | int]:
    """The Azure custom IPsec policy (wire names, the values of the SDK's enums)."""
    return {
        "ikeEncryption": AZURE_IKE_ENCRYPTION[policy.ike_encryption],
        "ikeIntegrity": AZURE_IKE_INTEGRITY[policy.ike_prf],
        "dhGroup": AZURE_DH_GROUP[policy.ike_dh],
        "ipsecEncryption": AZURE_IPSEC_ENCRYPTION[policy.esp_encryption],
        "ipsecIntegrity": AZURE_IPSEC_INTEGRITY[policy.esp_encryption],
        "pfsGroup": AZURE_PFS_GROUP[policy.esp_pfs],
        "saLifeTimeSeconds": CHILD_REKEY_SECONDS,
        "saDataSizeKilobytes": CHILD_REKEY_KILOBYTES,
    }


def gcp_cipher_suite(policy: CryptoPolicy = POLICY) -> dict[str, dict[str, list[str]]]:
    """The GCP tunnel's ``cipherSuite`` (wire names). AEAD ciphers take no integrity, so ``integrities``
    is left out (unset, not an empty set that may read back as absent and diff in every preview)."""
    return {
        "phase1": {
            "encryptions": [GCP_ENCRYPTION[policy.ike_encryption]],
            "prves": [GCP_PRF[policy.ike_prf]],
            "dhs": [GCP_DH[policy.ike_dh]],
        },
        "phase2": {
            "encryptions": [GCP_ENCRYPTION[policy.esp_encryption]],
            "pfs": [GCP_DH[policy.esp_pfs]],
        },
    }


def _reverse(table: dict[str, str], value: str, what: str) -> str:
    for ours, theirs in table.items():
        if theirs == value:
            return ours
    raise ValueError(f"{what} {value!r} is not in the mesh's crypto policy")


def policy_from_azure(policy: dict[str, str | int]) -> CryptoPolicy:
    """The suite an Azure connection with this custom policy negotiates."""
    if policy["ipsecIntegrity"] != policy["ipsecEncryption"]:
        raise ValueError("Azure requires the same GCM algorithm for IPsec encryption and integrity")
    return CryptoPolicy(
        ike_encryption=_reverse(AZURE_IKE_ENCRYPTION, str(policy["ikeEncryption"]), "IKE encryption"),
        ike_prf=_reverse(AZURE_IKE_INTEGRITY, str(policy["ikeIntegrity"]), "IKE integrity"),
        ike_dh=_reverse(AZURE_DH_GROUP, str(policy["dhGroup"]), "DH group"),
        esp_encryption=_reverse(AZURE_IPSEC_ENCRYPTION, str(policy["ipsecEncryption"]), "IPsec encryption"),
        esp_pfs=_reverse(AZURE_PFS_GROUP, str(policy["pfsGroup"]), "PFS group"),
    )


def policy_from_gcp(suite: dict[str, dict[str, list[str]]]) -> CryptoPolicy:
    """The suite a GCP tunnel with this ``cipherSuite`` negotiates (one value per role)."""

    def only(values: list[str], what: str) -> str:
        if len(values) != 1:
            raise ValueError(f"{what}: expected exactly one value, got {values}")
        return values[0]

    p1, p2 = suite["phase1"], suite["phase2"]
    return CryptoPolicy(
        ike_encryption=_reverse(GCP_ENCRYPTION, only(p1["encryptions"], "phase 1 encryption"), "phase 1 encryption"),
        ike_prf=_reverse(GCP_PRF, only(p1["prves"], "phase 1 PRF"), "phase 1 PRF"),
        ike_dh=_reverse(GCP_DH, only(p1["dhs"], "phase 1 DH group"), "phase 1 DH group"),
        esp_encryption=_reverse(GCP_ENCRYPTION, only(p2["encryptions"], "phase 2 encryption"), "phase 2 encryption"),
        esp_pfs=_reverse(GCP_DH, only(p2["pfs"], "phase 2 PFS group"), "phase 2 PFS group"),
    )
