"""A tiny app for CLI tests that start `tether worker` on it."""

from tether import App

app = App()


@app.workflow
async def noop() -> None:
    return None
