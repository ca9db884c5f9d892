"""A lab's name and where its state lives: what every ``resinfra lab`` command needs before anything else (kept apart
from the lab's plan, so a command line is read without loading the program)."""

from __future__ import annotations

from pathlib import Path

LAB_NAME = "rlab"
"""The default lab name: every namespace the lab creates starts with ``rlab-``, and its state lives in
``/var/lib/resinfra-lab/rlab``. Nothing else on a machine uses it; ``--name`` runs a second lab beside it."""
NAME_PATTERN = r"[a-z][a-z0-9]{0,5}"
"""A lab's name (the namespaces' prefix): what :class:`resinfra.netlab.Lab` accepts."""
STATE_ROOT = Path("/var/lib/resinfra-lab")
"""Not under /run: each gateway's charon gets a private /run (its pid file path is fixed), which would hide the lab's
files from it. A state left by a reboot (its namespaces gone) is recognised by the boot id and cleared by ``up``."""
