"""The ``resinfra:`` config namespace and its secret keys: secrets are read apart from the models, as Pulumi secrets."""

NAMESPACE = "resinfra"
SECRET_KEYS = frozenset({"sshPrivateKey"})
"""Secret ``resinfra:*`` keys: never part of the validated model (so never in a message or
repr); the program reads them as Pulumi secrets. Each must be present."""
OPTIONAL_SECRET_KEYS = frozenset({"notificationWebhookUrl", "healerEnvironment", "healerGoogleCredentials", "hetznerFailoverToken"})
"""Secret ``resinfra:*`` keys that may be absent; handled like :data:`SECRET_KEYS` otherwise."""
FAILOVER_TOKEN_KEY = "hetznerFailoverToken"
"""The Hetzner Cloud API token a Hetzner site's gateway pair moves its Floating IP and network routes with:
required once a Hetzner site has ``gateways: 2`` (:func:`conditional_secret_keys`)."""
URL_SECRET_KEYS = frozenset({"notificationWebhookUrl"})
"""Secret keys whose value must be an http(s) URL (checked without ever echoing the value)."""
PROVIDER_SECRET_KEYS = frozenset(
    {
        "hcloud:token",  # pulumi_hcloud/config/vars.py: token (HCLOUD_TOKEN)
        "gcp:credentials",  # pulumi_gcp/config/vars.py: credentials (a service-account key)
        "gcp:accessToken",
        "azure-native:clientSecret",  # pulumi_azure_native/config/vars.py: client_secret
        "azure-native:clientCertificatePassword",
        "proxmoxve:password",  # pulumi_proxmoxve/config/vars.py: password, api_token
        "proxmoxve:apiToken",
    }
)
"""Provider credentials in a stack file: they belong there only encrypted (``secure:``)."""
HEALER_ENVIRONMENT_NAMES = frozenset(
    {
        # Hetzner, Azure (a service principal), Proxmox: the providers read these when their config keys are unset.
        "HCLOUD_TOKEN",
        "ARM_CLIENT_ID",
        "ARM_CLIENT_SECRET",
        "ARM_TENANT_ID",
        "ARM_SUBSCRIPTION_ID",
        "PROXMOX_VE_ENDPOINT",
        "PROXMOX_VE_API_TOKEN",
        "PROXMOX_VE_USERNAME",
        "PROXMOX_VE_PASSWORD",
        # Backends and secrets providers other than GCS/Cloud KMS (those use healerGoogleCredentials).
        "PULUMI_CONFIG_PASSPHRASE",
        "PULUMI_ACCESS_TOKEN",
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_KEY",
        "AZURE_KEYVAULT_AUTH_VIA_CLI",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    }
)
"""Variables ``resinfra:healerEnvironment`` may set for the healer's pulumi runs (an allow-list: nothing else reaches its environment)."""
