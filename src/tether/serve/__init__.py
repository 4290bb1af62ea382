"""``tether serve``: the HTTP API, the web UI, ``/metrics`` and ``/healthz`` over a store.

Stateless: every request reads and writes the store the workers use, so any number of
``serve`` processes can stand behind a load balancer. Needs the ``serve`` extra
(``pip install 'tether[serve]'``).
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"tether serve needs the serve extra: pip install 'tether[serve]' ({exc})") from None

from tether.serve._auth import Tokens, check_bind
from tether.serve._server import DEFAULT_MAX_BODY, create_app

__all__ = ["DEFAULT_MAX_BODY", "Tokens", "check_bind", "create_app"]
