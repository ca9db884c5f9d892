"""``python -m resinfra.emulators <package> [engine address]``: serve one emulated provider plugin.

The engine starts ``pulumi-resource-<package>`` with its own address as the last argument and
reads the port the plugin listens on from the first line of its standard output.
"""

from __future__ import annotations

import sys
from concurrent import futures

import grpc
from pulumi.runtime.proto import provider_pb2_grpc

from resinfra.emulators import azure, command, gcp, hcloud, proxmox, random
from resinfra.emulators.provider import EmulatedProvider

PROVIDERS = {
    "gcp": lambda: EmulatedProvider(gcp.PACKAGE),
    "azure-native": lambda: EmulatedProvider(azure.PACKAGE),
    "hcloud": lambda: EmulatedProvider(hcloud.PACKAGE),
    "proxmoxve": lambda: EmulatedProvider(proxmox.PACKAGE),
    "random": lambda: EmulatedProvider(random.PACKAGE),
    "command": lambda: EmulatedProvider(command.PACKAGE, on_apply=command.record),
}

# The engine's messages can be large (a whole stack's rendered files travel as inputs).
_MAX_MESSAGE = 400 * 1024 * 1024


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in PROVIDERS:
        print(f"usage: python -m resinfra.emulators {{{','.join(PROVIDERS)}}} [engine address]", file=sys.stderr)
        return 2
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)],
    )
    provider_pb2_grpc.add_ResourceProviderServicer_to_server(PROVIDERS[argv[0]](), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
