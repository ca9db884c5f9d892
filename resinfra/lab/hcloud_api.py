"""The Hetzner Cloud API calls a gateway pair's failover makes, emulated for the lab (Tornado): the one place where the
lab moves a Floating IP and a network's routes as the cloud would.

Emulated as Hetzner documents them (docs.hetzner.cloud, "Floating IP Actions", "Network Actions", "Actions"):

- every request carries ``Authorization: Bearer <token>``; without the project's token: 401 ``unauthorized``;
- ``POST /floating_ips/{id}/actions/assign`` ``{"server": id}`` and ``.../unassign`` start an action (201, ``{"action":
  {"id", "status": "running", ...}}``); the Floating IP is routed to its new server when the action succeeds. An assign
  moves it from any other server in one step (terraform-provider-hcloud reassigns with one assign,
  internal/floatingip/resource.go);
- ``POST /networks/{id}/actions/add_route`` / ``delete_route`` ``{"destination", "gateway"}`` start an action; a
  destination may not overlap another route's (the API's AddDeleteRouteRequest: "Must not overlap ... with any
  destinations in other routes"): 422 ``invalid_input``; a route to delete must exist: 404 ``not_found``;
- one action at a time per resource: another request while one runs is 409 ``conflict`` (the API's "locked"/"conflict"
  error codes; the notify script retries them);
- ``GET /actions/{id}``, ``GET /floating_ips/{id}``, ``GET /networks/{id}``.

An action takes ``actionSeconds`` (the lab's assumption, printed with the figures; Hetzner documents no duration).
What the cloud does when an action succeeds is the lab's: ``ip route replace`` commands in the namespaces that stand
for the cloud's routing (the Floating IP toward its server's Primary IP on the underlay; the network's routes in the
namespace that plays the network).

Run: ``python -m resinfra.lab.hcloud_api SETTINGS.json`` (inside the namespace it listens in).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.web
from pydantic import BaseModel, ConfigDict


class FloatingIpSetting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ip: str
    server: int | None = None


class Settings(BaseModel):
    """The emulated project: what exists, and where the cloud's routing is played."""

    model_config = ConfigDict(extra="forbid")
    listen_host: str
    listen_port: int
    token: str
    servers: dict[int, str]
    """Server id -> its Primary IP (where a Floating IP assigned to it is routed)."""
    floating_ips: dict[int, FloatingIpSetting]
    networks: dict[int, list[tuple[str, str]]]
    """Network id -> its routes (destination, gateway)."""
    network_namespace: str
    """The namespace playing the networks' routing: their routes are its routes."""
    underlay_namespaces: list[str]
    """Namespaces on the underlay that route to a Floating IP through its server (every other site's gateways)."""
    underlay_device: str
    action_seconds: float = 0.5
    log: str


@dataclass
class Action:
    id: int
    command: str
    resource: tuple[str, int]
    started: float
    done: float
    status: str = "running"


@dataclass
class Project:
    settings: Settings
    actions: dict[int, Action] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def log(self, line: str) -> None:
        with Path(self.settings.log).open("a") as out:
            out.write(f"{time.time():.3f} {line}\n")

    def busy(self, resource: tuple[str, int]) -> bool:
        return any(a.resource == resource and a.status == "running" for a in self.actions.values())

    def start(self, command: str, resource: tuple[str, int], effect: Any) -> Action:
        now = time.time()
        action = Action(next(self.ids), command, resource, now, now + self.settings.action_seconds)
        self.actions[action.id] = action
        self.log(f"action {action.id} {command} {resource[0]}/{resource[1]} started")

        async def finish() -> None:
            await asyncio.sleep(self.settings.action_seconds)
            effect()
            action.status = "success"
            self.log(f"action {action.id} {command} succeeded")

        asyncio.get_running_loop().create_task(finish())
        return action

    def route_floating_ip(self, ip: str, server: int | None) -> None:
        """The cloud routes a Floating IP to its server's Primary IP (nowhere while unassigned)."""
        s = self.settings
        route = [f"{ip}/32", "via", s.servers[server], "dev", s.underlay_device] if server is not None else ["unreachable", f"{ip}/32"]
        for ns in s.underlay_namespaces:
            # Not checked: a namespace being re-created (a VM replaced) is missing for a moment; the lab routes the
            # Floating IP in it when it is back (resinfra.lab.pairs.recreate_member).
            subprocess.run(["ip", "-n", ns, "route", "replace", *route], check=False, capture_output=True)

    def route_network(self, destination: str, gateway: str | None) -> None:
        ns = self.settings.network_namespace
        if gateway is None:
            subprocess.run(["ip", "-n", ns, "route", "del", destination], check=False, capture_output=True)
        else:
            subprocess.run(["ip", "-n", ns, "route", "replace", destination, "via", gateway], check=True, capture_output=True)


def action_json(a: Action) -> dict[str, Any]:
    return {
        "id": a.id,
        "command": a.command,
        "status": a.status,
        "progress": 100 if a.status == "success" else 0,
        "started": a.started,
        "finished": a.done if a.status == "success" else None,
        "resources": [{"id": a.resource[1], "type": a.resource[0]}],
        "error": None,
    }


class Handler(tornado.web.RequestHandler):
    project: Project

    def initialize(self, project: Project) -> None:
        self.project = project

    def prepare(self) -> None:
        if self.request.headers.get("Authorization") != f"Bearer {self.project.settings.token}":
            self.fail(401, "unauthorized", "unable to authenticate")

    def fail(self, status: int, code: str, message: str) -> None:
        self.set_status(status)
        self.finish({"error": {"code": code, "message": message}})

    def body(self) -> dict[str, Any]:
        try:
            value = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            self.fail(400, "json_error", "invalid JSON")
            raise tornado.web.Finish
        return value

    def started(self, action: Action) -> None:
        self.set_status(201)
        self.finish({"action": action_json(action)})


class ActionHandler(Handler):
    def get(self, ident: str) -> None:
        action = self.project.actions.get(int(ident))
        if action is None:
            return self.fail(404, "not_found", f"action {ident} not found")
        self.finish({"action": action_json(action)})
        return None


class FloatingIpHandler(Handler):
    def get(self, ident: str) -> None:
        fip = self.project.settings.floating_ips.get(int(ident))
        if fip is None:
            return self.fail(404, "not_found", f"floating IP {ident} not found")
        self.finish({"floating_ip": {"id": int(ident), "ip": fip.ip, "type": "ipv4", "server": fip.server}})
        return None


class FloatingIpActionHandler(Handler):
    def post(self, ident: str, command: str) -> None:
        fip = self.project.settings.floating_ips.get(int(ident))
        if fip is None:
            return self.fail(404, "not_found", f"floating IP {ident} not found")
        resource = ("floating_ip", int(ident))
        if self.project.busy(resource):
            return self.fail(409, "conflict", "another action is running on this floating IP")
        if command == "assign":
            server = self.body().get("server")
            if not isinstance(server, int) or server not in self.project.settings.servers:
                return self.fail(422, "invalid_input", "server: not a server of this project")
            fip.server = server  # the API reports the new assignee at once; the routing follows with the action

            def effect() -> None:
                self.project.route_floating_ip(fip.ip, server)

            return self.started(self.project.start("assign_floating_ip", resource, effect))
        if command == "unassign":
            fip.server = None
            return self.started(self.project.start("unassign_floating_ip", resource, lambda: self.project.route_floating_ip(fip.ip, None)))
        return self.fail(404, "not_found", f"no action {command}")


class NetworkHandler(Handler):
    def get(self, ident: str) -> None:
        routes = self.project.settings.networks.get(int(ident))
        if routes is None:
            return self.fail(404, "not_found", f"network {ident} not found")
        self.finish({"network": {"id": int(ident), "routes": [{"destination": d, "gateway": g} for d, g in routes]}})
        return None


class NetworkActionHandler(Handler):
    def post(self, ident: str, command: str) -> None:
        routes = self.project.settings.networks.get(int(ident))
        if routes is None:
            return self.fail(404, "not_found", f"network {ident} not found")
        resource = ("network", int(ident))
        if self.project.busy(resource):
            return self.fail(409, "conflict", "another action is running on this network")
        body = self.body()
        destination, gateway = str(body.get("destination", "")), str(body.get("gateway", ""))
        try:
            dest = ipaddress.IPv4Network(destination)
            ipaddress.IPv4Address(gateway)
        except ValueError:
            return self.fail(422, "invalid_input", "destination and gateway must be an IPv4 network and address")
        if command == "add_route":
            if any(ipaddress.IPv4Network(d).overlaps(dest) for d, _ in routes):
                return self.fail(422, "invalid_input", f"destination {destination} overlaps an existing route")
            routes.append((destination, gateway))
            return self.started(self.project.start("add_route", resource, lambda: self.project.route_network(destination, gateway)))
        if command == "delete_route":
            if (destination, gateway) not in routes:
                return self.fail(404, "not_found", f"no route {destination} via {gateway}")
            routes.remove((destination, gateway))
            return self.started(self.project.start("delete_route", resource, lambda: self.project.route_network(destination, None)))
        return self.fail(404, "not_found", f"no action {command}")


def application(project: Project) -> tornado.web.Application:
    args = {"project": project}
    return tornado.web.Application(
        [
            (r"/v1/actions/(\d+)", ActionHandler, args),
            (r"/v1/floating_ips/(\d+)", FloatingIpHandler, args),
            (r"/v1/floating_ips/(\d+)/actions/(\w+)", FloatingIpActionHandler, args),
            (r"/v1/networks/(\d+)", NetworkHandler, args),
            (r"/v1/networks/(\d+)/actions/(\w+)", NetworkActionHandler, args),
        ]
    )


async def serve(settings: Settings) -> None:
    project = Project(settings)
    # The cloud's routing as the project starts: Floating IPs where they are assigned, the networks' routes.
    for fip in settings.floating_ips.values():
        project.route_floating_ip(fip.ip, fip.server)
    for routes in settings.networks.values():
        for destination, gateway in routes:
            project.route_network(destination, gateway)
    application(project).listen(settings.listen_port, address=settings.listen_host)
    project.log(f"listening on {settings.listen_host}:{settings.listen_port}")
    await asyncio.Event().wait()


def main(argv: list[str]) -> int:
    settings = Settings.model_validate_json(Path(argv[0]).read_text())
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
