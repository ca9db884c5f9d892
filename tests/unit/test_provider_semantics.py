"""Declared arguments that the providers' APIs constrain beyond their types (provider audit)."""

from __future__ import annotations

from typing import Any

import pytest

from resinfra.offline import run_offline
from tests.conftest import shape


def with_azure(values: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """``values`` with the Azure site's settings updated."""
    next(s for s in values["resinfra:sites"] if s["provider"] == "azure").update(settings)
    return values


@pytest.mark.parametrize(
    ("sku", "generation"),
    [("VpnGw1AZ", "Generation1"), ("VpnGw3AZ", "Generation1"), ("VpnGw4AZ", "Generation2"), ("VpnGw5AZ", "Generation2")],
)
def test_vnet_gateway_generation_offers_the_sku(sku: str, generation: str) -> None:
    # Azure has VpnGw4AZ/VpnGw5AZ only in Generation2 and VpnGw1AZ only in Generation1.
    run = run_offline(with_azure(shape("azure"), gatewaySku=sku))
    (gateway,) = run.of_type("azure-native:network:VirtualNetworkGateway")
    assert gateway.inputs["sku"] == {"name": sku, "tier": sku}
    assert gateway.inputs["vpnGatewayGeneration"] == generation
