"""Tether's AI layer: durable LLM calls, agents, tools and MCP, built on the public API."""

from tether.ai._agent import Agent, AgentTool, InvalidToolCall, MaxTurnsExceeded
from tether.ai._approvals import (
    APPROVAL_SIGNAL,
    ApprovalDecision,
    NoPendingApproval,
    PendingApproval,
    approve,
    pending_approval,
    pending_approvals,
    reject,
    request_approval,
)
from tether.ai._tools import (
    FunctionTool,
    Tool,
    ToolArgumentError,
    WorkflowTool,
    function_tool,
    idempotency_headers,
    workflow_tool,
)

__all__ = [
    "APPROVAL_SIGNAL",
    "Agent",
    "AgentTool",
    "ApprovalDecision",
    "FunctionTool",
    "InvalidToolCall",
    "MaxTurnsExceeded",
    "NoPendingApproval",
    "PendingApproval",
    "Tool",
    "ToolArgumentError",
    "WorkflowTool",
    "approve",
    "function_tool",
    "idempotency_headers",
    "pending_approval",
    "pending_approvals",
    "reject",
    "request_approval",
    "workflow_tool",
]
