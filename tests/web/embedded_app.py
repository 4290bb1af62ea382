"""``create_app`` embedded in an ASGI server other than ``tether serve``, as
docs/serve.md shows: ``python -m uvicorn tests.web.embedded_app:asgi`` (the store from
``$TETHER_DATABASE_URL``)."""

from __future__ import annotations

import os

from tests.web import webapp
from tether.serve import create_app

asgi = create_app(webapp.make_app(os.environ["TETHER_DATABASE_URL"]))
