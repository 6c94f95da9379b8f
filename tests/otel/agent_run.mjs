// An agent run exported with the stock OpenTelemetry JavaScript SDK over OTLP/HTTP JSON.
// Usage: node agent_run.mjs CONVERSATION_ID
// Endpoint and headers come from OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_HEADERS.
// Prints the trace id (hex).
import { context, trace, SpanStatusCode } from '@opentelemetry/api';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';

const conversation = process.argv[2];
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'agent-js' }),
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
});
const tracer = provider.getTracer('agent-run', '1.0');
const under = (parent) => trace.setSpan(context.active(), parent);
const child = (parent, name, attributes) => tracer.startSpan(name, { attributes }, under(parent));

const root = tracer.startSpan('invoke_agent triage', {
  attributes: {
    'gen_ai.operation.name': 'invoke_agent',
    'gen_ai.agent.name': 'triage',
    'gen_ai.conversation.id': conversation,
  },
});
child(root, 'plan', {
  'gen_ai.operation.name': 'plan',
  'eventlog.plan.steps': JSON.stringify(['search', 'fetch', 'handoff']),
}).end();
child(root, 'chat gpt-4o', {
  'gen_ai.operation.name': 'chat',
  'gen_ai.provider.name': 'openai',
  'gen_ai.request.model': 'gpt-4o',
  'gen_ai.usage.input_tokens': 120,
  'gen_ai.usage.output_tokens': 30,
  'gen_ai.conversation.id': conversation,
}).end();
child(root, 'execute_tool search', {
  'gen_ai.operation.name': 'execute_tool',
  'gen_ai.tool.name': 'search',
  'gen_ai.tool.call.id': 'call_1',
  'gen_ai.tool.call.arguments': JSON.stringify({ q: 'refund policy' }),
}).end();
const failing = child(root, 'execute_tool fetch_page', {
  'gen_ai.operation.name': 'execute_tool',
  'gen_ai.tool.name': 'fetch_page',
  'gen_ai.tool.call.id': 'call_2',
});
failing.recordException({ name: 'ValueError', message: 'page not found' });
failing.setStatus({ code: SpanStatusCode.ERROR, message: 'page not found' });
failing.end();
child(root, 'execute_tool transfer_to_billing', {
  'gen_ai.operation.name': 'execute_tool',
  'gen_ai.tool.name': 'transfer_to_billing',
  'gen_ai.tool.call.id': 'call_3',
}).end();
const billing = child(root, 'invoke_agent billing', {
  'gen_ai.operation.name': 'invoke_agent',
  'gen_ai.agent.name': 'billing',
});
child(billing, 'chat claude', {
  'gen_ai.operation.name': 'chat',
  'gen_ai.system': 'anthropic',
  'gen_ai.request.model': 'claude-sonnet',
  'gen_ai.usage.prompt_tokens': 80,
  'gen_ai.usage.completion_tokens': 20,
}).end();
billing.end();
root.end();

await provider.forceFlush();
await provider.shutdown();
console.log(root.spanContext().traceId);
