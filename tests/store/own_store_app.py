"""An app that names its own store (``OWN_STORE_URL``), for ``tether start --app``."""

import os

from tether import App

app = App(os.environ["OWN_STORE_URL"])


@app.workflow
async def hello(name: str) -> str:
    return f"hello {name}"
