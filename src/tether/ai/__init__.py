"""Tether's AI layer: durable LLM calls, agents, tools and MCP, built on the public API
and the extension interface (``tether.ext``) only, as any integration is.

``LLM("openai:gpt-4.1-mini")`` is a model client whose calls are durable operations in
a workflow, with accounting, budgets and a shared circuit breaker (``docs/llm.md``).
Agents, tools and MCP: ``docs/tools-and-mcp.md``; provider clients:
``docs/ai-providers.md``.
"""

from tether.ai._agent import (
    Agent,
    AgentTool,
    InvalidToolCall,
    MaxTokensExceeded,
    MaxTurnsExceeded,
    ModelRefused,
    call_child,
    split_budget,
)
from tether.ai._approvals import (
    APPROVAL_SIGNAL,
    ApprovalDecision,
    NoPendingApproval,
    PendingApproval,
    approve,
    pending_approval,
    pending_approvals,
    pending_approvals_page,
    reject,
    request_approval,
)
from tether.ai._breaker import CircuitBreaker
from tether.ai._budget import Budget, BudgetExceeded, set_budget
from tether.ai._errors import (
    FatalProviderError,
    ProviderBillingError,
    ProviderConfigError,
    ProviderError,
    RetryableProviderError,
    error_for_status,
    error_in_answer,
)
from tether.ai._llm import DEFAULT_LLM_RETRY, LLM, OutputValidationError
from tether.ai._metered import MeteredModel
from tether.ai._pricing import PriceTable
from tether.ai._tools import (
    FunctionTool,
    Tool,
    ToolArgumentError,
    WorkflowTool,
    function_tool,
    idempotency_headers,
    workflow_tool,
)
from tether.ai._types import (
    ChatReply,
    Message,
    ToolCall,
    ToolSpec,
    Usage,
    system_message,
    tool_message,
    user_message,
)

__all__ = [
    "APPROVAL_SIGNAL",
    "DEFAULT_LLM_RETRY",
    "LLM",
    "Agent",
    "AgentTool",
    "ApprovalDecision",
    "Budget",
    "BudgetExceeded",
    "ChatReply",
    "CircuitBreaker",
    "FatalProviderError",
    "FunctionTool",
    "InvalidToolCall",
    "MaxTokensExceeded",
    "MaxTurnsExceeded",
    "Message",
    "MeteredModel",
    "ModelRefused",
    "NoPendingApproval",
    "OutputValidationError",
    "PendingApproval",
    "PriceTable",
    "ProviderBillingError",
    "ProviderConfigError",
    "ProviderError",
    "RetryableProviderError",
    "Tool",
    "ToolArgumentError",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "WorkflowTool",
    "approve",
    "call_child",
    "error_for_status",
    "error_in_answer",
    "function_tool",
    "idempotency_headers",
    "pending_approval",
    "pending_approvals",
    "pending_approvals_page",
    "reject",
    "request_approval",
    "set_budget",
    "split_budget",
    "system_message",
    "tool_message",
    "user_message",
    "workflow_tool",
]
