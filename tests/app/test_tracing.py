"""Tracing across API, broker and worker: a run's steps are spans in the trace of the request that started it,
each step a child of the span that made it ready, with the context carried in the messages' headers."""

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.app.conftest import register, start, wait_for_run

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the platform's tracers are proxies: they follow the global provider
    return exporter


async def test_a_runs_steps_are_traced_under_the_request_that_started_it(spans, api, worker):
    await register(
        api,
        "diamond",
        [
            {"name": "a", "task": "builtin.echo"},
            {"name": "b", "task": "builtin.echo", "depends_on": ["a"]},
            {"name": "c", "task": "builtin.echo", "depends_on": ["a"]},
            {"name": "d", "task": "builtin.echo", "depends_on": ["b", "c"]},
        ],
    )
    spans.clear()
    run = await wait_for_run(api, (await start(api, "diamond"))["id"])
    assert run["status"] == "succeeded"

    finished = spans.get_finished_spans()
    (request,) = [s for s in finished if s.name == "POST /v1/workflows/{name}/runs"]
    steps = {s.attributes["workflow.step"]: s for s in finished if s.name.startswith("step ")}
    assert set(steps) == {"a", "b", "c", "d"}
    assert {s.context.trace_id for s in steps.values()} == {request.context.trace_id}
    assert steps["a"].parent.span_id == request.context.span_id
    assert steps["b"].parent.span_id == steps["c"].parent.span_id == steps["a"].context.span_id
    assert steps["d"].parent.span_id in {steps["b"].context.span_id, steps["c"].context.span_id}
