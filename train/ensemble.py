"""Average several exported focus networks into one ONNX model (an ensemble of training runs).

Two runs of the same recipe on the same data differ in their most confident patches by as much as the
recipes compared so far (models/EXPERIMENTS.md, session 6); the mean of their outputs is steadier.  The
averaged model has the members' input and outputs (``p_sharp``, ``kind``), so cull runs it like any
other focus model, at the members' summed cost per patch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def average_models(members: Sequence[Path], out: Path) -> None:
    """Write to ``out`` (atomically) one ONNX model whose every output is the mean of the members'.

    The members must share the input name and the output names (as export_onnx writes them); each
    member's own names are prefixed so that their graphs sit side by side on the one input.  Raises
    ValueError for fewer than two members or members that do not match.
    """
    import onnx
    from onnx import compose, helper

    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two models, got {len(members)}")
    models = [onnx.load(str(path)) for path in members]
    first = models[0].graph
    source = first.input[0].name
    outputs = [o.name for o in first.output]
    for path, model in zip(members, models):
        if [i.name for i in model.graph.input] != [source] or [o.name for o in model.graph.output] != outputs:
            raise ValueError(f"{path}: input/outputs {[i.name for i in model.graph.input]} / "
                             f"{[o.name for o in model.graph.output]} differ from {[source]} / {outputs}")
    nodes, initializers = [], []
    for index, model in enumerate(models):
        prefixed = compose.add_prefix(model, prefix=f"m{index}_")
        for node in prefixed.graph.node:
            node.input[:] = [source if name == f"m{index}_{source}" else name for name in node.input]
            nodes.append(node)
        initializers.extend(prefixed.graph.initializer)
    share = helper.make_tensor("ensemble_share", onnx.TensorProto.FLOAT, [], [1.0 / len(models)])
    for name in outputs:
        nodes.append(helper.make_node("Sum", [f"m{i}_{name}" for i in range(len(models))], [f"{name}_sum"]))
        nodes.append(helper.make_node("Mul", [f"{name}_sum", "ensemble_share"], [name]))
    graph = helper.make_graph(nodes, "ensemble", [first.input[0]], list(first.output), [*initializers, share])
    merged = helper.make_model(graph, opset_imports=models[0].opset_import)
    merged.ir_version = models[0].ir_version
    onnx.checker.check_model(merged)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    onnx.save(merged, str(tmp))
    os.replace(tmp, out)
