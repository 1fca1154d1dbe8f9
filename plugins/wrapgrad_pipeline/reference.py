"""``docs/pipeline-reference.md``, generated from the pipeline steps' table records.

The reference documents exactly what :func:`wrapgrad_pipeline.plan.validate` reads: one section
per table of every built-in pipeline step (in run order), each field with its type, default and
meaning from the record (:func:`wrapgrad_pipeline.schema.field_docs`), and the ``--smoke`` sizes.
A test fails when the committed file differs from :func:`render`. Regenerate it with::

    python -m wrapgrad_pipeline.reference            # writes docs/pipeline-reference.md
    python -m wrapgrad_pipeline.reference --check    # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from wrapgrad.records import Spec
from wrapgrad.registry import Registry, use_registry
from wrapgrad_pipeline.plan import PipelineTable, order_steps
from wrapgrad_pipeline.schema import field_docs
from wrapgrad_pipeline.smoke import FALLBACK_LEVELS, SIZES

__all__ = ["main", "render"]

_INTRO = """\
# Pipeline file reference

<!-- Generated from the pipeline steps' table records by `python -m wrapgrad_pipeline.reference`;
edit the records (their field `doc`s and docstrings), not this file. -->

A pipeline file is TOML. `wrapgrad run FILE` (or `wrapgrad_pipeline.Pipeline.from_file(FILE)`)
checks the whole file before anything runs: unknown tables and fields, wrong types, missing
fields, unknown plugin names (answered with the closest names), references to calibrations that
do not exist and output paths that would leave the output directory. Errors name the file, the
table/field and what was expected:

```
examples/x.toml: [explain].enhancers[1].name: unknown enhancer 'noisegrd'; did you mean 'noisegrad'?
examples/x.toml: [data].samples: expected an integer, got a string 'many'
examples/x.toml: [report].markdown: expected a path inside the output directory, got '../r.md', which leaves it
```

Nothing in a file executes code: values are data, plugin components are looked up by name in the
registry (`wrapgrad plugins` lists them).

Each table is read by a pipeline step (the `wrapgrad_pipeline_steps` hook; the built-in steps are
below, a plugin's steps add their own tables). A step runs when the file has its table, or always
(marked below); steps run in the order of what they need and provide, so a step that provides
models (`[model]`, or a plugin's training step) runs before calibration and explanation. The
explain and evaluate steps work on every *variant*, a (model, enhancer) pair, labelled by the
enhancer when the run has one model, by the model when there is one enhancer, `model/enhancer`
otherwise; expectations name variant labels.
"""

_OUTPUTS = """\
## Outputs

- `results.json`: format `wrapgrad-pipeline-results/1`; the pipeline file's text and hash,
  versions (wrapgrad, python, torch, captum, quantus, numpy, scipy), seeds, the model's test
  accuracy (`model`, or `models` by label when there are several), every calibration record, the
  enhancer options as run, every per-sample score (`scores[method][variant][metric]`, `null` for
  n/a; `enhancers` lists the variant labels and `variants` their model and enhancer), attack
  runs, expectations, timings, errors and the figure list.
- `report.md`: rendered from `results.json` alone; `wrapgrad report DIR` prints it again.
- `figures/grid_<method>.png`, `figures/bar_<metric>.png`.
"""


def _paragraph(doc: str | None) -> list[str]:
    text = inspect.cleandoc(doc or "")
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    return [line for p in paragraphs for line in (p, "")]


def _cell(text: str) -> str:
    """A table cell's text with every ``|`` escaped: GFM splits a row at each bare ``|``, inside
    code spans too."""
    return str(text).replace("|", "\\|")


def _table(cls: type) -> list[str]:
    rows = field_docs(cls)
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    lines += [
        f"| `{_cell(r['name'])}` | "
        + " | ".join(_cell(r[k]) for k in ("type", "default", "doc"))
        + " |"
        for r in rows
    ]
    lines.append("")
    return lines


def _record(cls: type, heading: str, intro: Iterable[str] = ()) -> list[str]:
    """A table's section: heading, docstring, fields, then its sub-tables' sections."""
    lines = [heading, "", *intro]
    lines += _paragraph(cls.__doc__)
    lines += _table(cls)
    return lines


def _subtables(cls: type, name: str) -> list[str]:
    lines: list[str] = []
    for row in field_docs(cls):
        sub = row["table"]
        if sub is not None:
            lines += _record(sub, f"`[[{name}.{row['name']}]]`:")
            lines += _subtables(sub, f"{name}.{row['name']}")
    return lines


def _smoke(specs: Iterable[tuple[str, Spec]]) -> list[str]:
    lines = [
        "## `--smoke`",
        "",
        "`wrapgrad run FILE --smoke` (`Pipeline.run(..., smoke=True)`) shrinks every size so that "
        "a pipeline runs end to end in seconds (CI runs every example this way). The pipeline's "
        f"own sizes: at most {SIZES['samples']} evaluated samples (and metric samples), training of "
        f"{SIZES['epochs']} epoch on {SIZES['train_items']} items, calibrations on "
        f"{SIZES['calibration_samples']} items, attacks on {SIZES['attack_samples']} items, "
        f"{SIZES['grid_samples']} grid samples. Each component's options are shrunk as its spec "
        "declares (`smoke` caps, e.g. an enhancer's `n_samples`): a number given above its cap is "
        "lowered to it and an option not given is set to it (except an option another part of the "
        "same `wrap()` call also takes). A model trained that briefly is near chance level; where "
        f"its calibration fails, a smoke run uses fixed levels ({FALLBACK_LEVELS['sigma']}) and the report "
        "says so. The numbers of a smoke run say nothing about the methods.",
        "",
    ]
    capped = [(s.kind, n, s.smoke_caps()) for n, s in specs if s.smoke_caps()]
    if capped:
        lines += ["| component | smoke caps |", "|---|---|"]
        lines += [
            f"| {kind} `{name}` | " + ", ".join(f"`{k}` {v}" for k, v in caps.items()) + " |"
            for kind, name, caps in capped
        ]
        lines += ["", "(Quantus metrics declare theirs too: `wrapgrad plugins --kind metric`.)", ""]
    return lines


def render(registry: Registry | None = None) -> str:
    """The reference for the steps of ``registry`` (default: the built-in plugins only)."""
    registry = registry or Registry(autoload=False)
    with use_registry(registry):
        steps = registry.specs("pipeline_step")
        lines = [_INTRO]
        lines += _record(
            PipelineTable,
            "## `[pipeline]`",
            ["Required in every file.", ""],
        )
        for name in order_steps(steps):
            spec = steps[name]
            if spec.schema is None:
                continue
            heading = f"[{spec.table}.<name>]" if spec.named else f"[{spec.table}]"
            needs = ", ".join(spec.needs) or "nothing"
            provides = ", ".join(spec.provides) or "the output files"
            when = "always runs" if spec.always else "runs when the file has this table"
            intro = [f"Read by the `{name}` step ({when}; needs {needs}; provides {provides}).", ""]
            lines += _record(spec.schema, f"## `{heading}`", intro)
            lines += _subtables(spec.schema, spec.table)
        others = [
            (n, s)
            for kind in ("explainer", "enhancer", "calibrator", "metric", "attack")
            for n, s in registry.specs(kind).items()
            if not n.startswith("quantus_")
        ]
        lines += _smoke(others)
        lines.append(_OUTPUTS)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wrapgrad_pipeline.reference")
    parser.add_argument("path", nargs="?", default="docs/pipeline-reference.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    path = Path(args.path)
    text = render()
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is stale; run python -m wrapgrad_pipeline.reference", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
