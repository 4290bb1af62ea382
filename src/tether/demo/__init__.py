"""``tether demo``: a research agent survives ``kill -9`` of its worker, waits for a
human's approval, and completes without paying for a model call twice (see ``_run``)."""

from tether.demo._run import run_demo

__all__ = ["run_demo"]
