"""Workers: processes that claim runs from task queues and execute them."""

from tether.worker._worker import ExitInTask, Worker

__all__ = ["ExitInTask", "Worker"]
