"""An agent run exported with the stock OpenTelemetry Python SDK.

Usage: python agent_run.py http/protobuf|grpc CONVERSATION_ID
The endpoint and the token come from the standard environment variables
(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS). Prints the trace id (hex).
"""

import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode, set_span_in_context

protocol, conversation = sys.argv[1], sys.argv[2]
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

provider = TracerProvider(resource=Resource.create({"service.name": "agent-py"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
tracer = provider.get_tracer("agent-run", "1.0")


def child(parent, name, attrs):
    return tracer.start_as_current_span(name, context=set_span_in_context(parent), attributes=attrs)


with tracer.start_as_current_span(
    "invoke_agent triage",
    attributes={
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "triage",
        "gen_ai.conversation.id": conversation,
    },
) as root:
    with child(root, "plan", {"gen_ai.operation.name": "plan",
                              "eventlog.plan.steps": json.dumps(["search", "fetch", "handoff"])}):
        pass
    with child(root, "chat gpt-4o", {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.conversation.id": conversation,
    }):
        pass
    with child(root, "execute_tool search", {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "search",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.call.arguments": json.dumps({"q": "refund policy"}),
    }):
        pass
    with child(root, "execute_tool fetch_page", {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "fetch_page",
        "gen_ai.tool.call.id": "call_2",
    }) as failing:
        failing.record_exception(ValueError("page not found"))
        failing.set_status(Status(StatusCode.ERROR, "page not found"))
    with child(root, "execute_tool transfer_to_billing", {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "transfer_to_billing",
        "gen_ai.tool.call.id": "call_3",
    }):
        pass
    with child(root, "invoke_agent billing", {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "billing",
    }) as billing:
        with child(billing, "chat claude", {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-sonnet",
            "gen_ai.usage.prompt_tokens": 80,
            "gen_ai.usage.completion_tokens": 20,
        }):
            pass
    trace_id = format(root.get_span_context().trace_id, "032x")

provider.shutdown()
print(trace_id)
