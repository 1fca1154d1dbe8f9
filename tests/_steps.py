"""A test plugin's pipeline step that adds one model to the run, as a training step does
(shared by the pipeline tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

from wrapgrad import hookimpl
from wrapgrad.records import PipelineStepSpec


class AddModelStep:
    """Declares one model when the file is read and adds it when the step runs; a subclass says
    which label it gets and builds it."""

    def label(self, table: Any) -> tuple[str, str]:
        """``(the model's label, the pipeline-file field that names it)``."""
        raise NotImplementedError

    def build(self, table: Any, context: Any) -> tuple[nn.Module, dict[str, Any]]:
        """The model and its info."""
        raise NotImplementedError

    def check(self, table: Any, plan: Any) -> Any:
        plan.add_model(*self.label(table))
        return table

    def shrink(self, table: Any) -> Any:
        return table

    def outputs(self, table: Any) -> tuple[str, ...]:
        return ()

    def run(self, table: Any, context: Any) -> None:
        model, info = self.build(table, context)
        context.add_model(self.label(table)[0], model.eval(), info)


def step_plugin(name: str, step: type, schema: type) -> object:
    """A plugin whose ``wrapgrad_pipeline_steps`` hook yields the step ``name``: ``step`` reading
    the table ``[name]`` into ``schema``, after the data step, providing models."""

    class Plugin:
        @staticmethod
        @hookimpl
        def wrapgrad_pipeline_steps() -> Iterator[PipelineStepSpec]:
            yield PipelineStepSpec(
                name=name,
                factory=step,
                table=name,
                schema=schema,
                needs=("data",),
                provides=("models",),
            )

    return Plugin()
