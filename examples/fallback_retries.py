"""Fallback retries: a rate-limited primary model, retried, then replaced.

    python examples/fallback_retries.py

The primary model answers HTTP 429 (with a Retry-After hint) every time; the
wrapper retries it with backoff, then fails over to the fallback. Every attempt
is its own `chat` span, and the wrapper's span records the routing decision
(requested_route, selected_route, attempts, and routing_reason=quota_throttled:
the primary was rate limited; a primary that is down gives `failover`).
Waits are shortened here so the example runs in a second.
"""

from __future__ import annotations

from typing import Any, ClassVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import spanguard
from spanguard.guardrails import RetryPolicy
from spanguard.plugins.langchain import ResilientChatModel, SpanguardCallbackHandler


class RateLimited(Exception):
    """Shaped like a provider SDK's 429 error: status code and headers."""

    status_code = 429
    headers: ClassVar[dict[str, str]] = {"retry-after": "0.05"}


class ThrottledModel(BaseChatModel):
    model_name: str = "gpt-4o"

    @property
    def _llm_type(self) -> str:
        return "example-throttled"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        raise RateLimited("rate limit reached for gpt-4o")


class FallbackModel(ThrottledModel):
    model_name: str = "claude-3-5-haiku"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        reply = AIMessage(content="Refunds take up to 5 business days.",
                          usage_metadata={"input_tokens": 42, "output_tokens": 9,
                                          "total_tokens": 51})
        reply.response_metadata = {"model_name": self.model_name}
        return ChatResult(generations=[ChatGeneration(message=reply)])


def main() -> None:
    handle = spanguard.configure(console=True)
    model = ResilientChatModel(models=[ThrottledModel(), FallbackModel()],
                               retry=RetryPolicy(max_attempts=2, initial_wait=0.01,
                                                 max_wait=0.1))
    handler = SpanguardCallbackHandler(tracer_provider=handle.tracer_provider)
    answer = model.invoke("How long do refunds take?", config={"callbacks": [handler]})
    routing = answer.response_metadata["spanguard"]
    print(f"answer from {routing['selected_route']} ({routing['routing_reason']}): "
          f"{answer.content}")
    handle.shutdown()


if __name__ == "__main__":
    main()
