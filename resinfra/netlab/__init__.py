"""Sites in network namespaces on one machine (:class:`Lab`): what the lab, the real-tunnel tests and
``bench/mesh.py`` run gateways, clouds and nodes in. Needs root.

Its modules: ``lab`` (the :class:`Lab`: namespaces, the underlay, nodes, charons, birds), ``topology`` (the sites,
clouds and pairs it is built from), ``cloud_network`` (an emulated cloud's namespaces and routes), ``pair_members``
(a gateway pair's VMs), ``charon`` (strongSwan's settings as the lab runs it) and ``process`` (commands, waits,
daemons).
"""

from resinfra.netlab.lab import Lab
from resinfra.netlab.process import LabError, run, wait_for

__all__ = ["Lab", "LabError", "run", "wait_for"]
