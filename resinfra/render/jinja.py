"""The one Jinja2 environment every text template is rendered with."""

from __future__ import annotations

import functools
from typing import Any

import jinja2


@functools.cache
def environment() -> jinja2.Environment:
    # StrictUndefined: a missing variable is an error, never an empty string in a config file.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("resinfra.render", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render_template(name: str, **context: Any) -> str:
    """Render ``resinfra/render/templates/<name>`` with ``context``."""
    return environment().get_template(name).render(**context)
