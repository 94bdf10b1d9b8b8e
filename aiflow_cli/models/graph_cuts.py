"""Find cut points in a dataflow graph: places where the fewest tensors cross.

For every operation ``n`` (topological order) take its prefix ``P = ancestors(n) + {n}``: the
device would run exactly ``P``. The tensors crossing to the server are those made in ``P`` (or
graph inputs) that something outside ``P`` still reads, or that are graph outputs. A cut point is
a prefix whose crossing count equals the minimum over all prefixes (1 for a CNN; hidden states +
mask for an encoder). Prefixes are bitsets (Python ints), so this stays fast for graphs of a few
thousand operations. Constant sub-graphs never cross: each side can recompute them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GraphNode", "GraphCut", "find_cuts"]


@dataclass(frozen=True)
class GraphNode:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class GraphCut:
    after: str  # the last operation on the device side
    position: int  # index of that operation in topological order
    crossing: tuple[str, ...]  # values that cross, in a stable order
    prefix: int  # bitset of operation indices on the device side


def find_cuts(nodes: list[GraphNode], graph_inputs: list[str], graph_outputs: list[str],
              constants: set[str]) -> list[GraphCut]:
    """``nodes`` must be topologically sorted. Returns the minimal-crossing cuts in order."""
    producer: dict[str, int] = {}
    const = set(constants)
    for i, node in enumerate(nodes):
        if all(v in const or v == "" for v in node.inputs):
            const.update(node.outputs)  # computed from constants only
        for v in node.outputs:
            producer[v] = i

    consumers: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for v in node.inputs:
            if v and v not in const:
                consumers[v] = consumers.get(v, 0) | (1 << i)

    live_nodes = [i for i, n in enumerate(nodes) if not all(v in const for v in n.outputs)]
    ancestors: list[int] = [0] * len(nodes)
    for i, node in enumerate(nodes):
        mask = 1 << i
        for v in node.inputs:
            if v in producer:
                mask |= ancestors[producer[v]]
        ancestors[i] = mask

    outputs = set(graph_outputs)
    values = [v for v in list(graph_inputs) + [v for n in nodes for v in n.outputs] if v not in const]
    candidates: list[GraphCut] = []
    for i in live_nodes:
        prefix = ancestors[i]
        crossing = []
        reaches_output = False
        for v in values:
            p = producer.get(v)
            if p is not None and not (prefix >> p) & 1:
                continue
            if v in outputs and p is not None:
                reaches_output = True
                break
            if consumers.get(v, 0) & ~prefix:
                crossing.append(v)
        if reaches_output or not crossing:
            continue
        if all(v in graph_inputs for v in crossing):
            continue  # nothing computed on the device: that is the server-only extreme, not a cut
        candidates.append(GraphCut(nodes[i].name, i, tuple(crossing), prefix))
    if not candidates:
        return []
    fewest = min(len(c.crossing) for c in candidates)
    cuts = [c for c in candidates if len(c.crossing) == fewest]
    # Keep a chain: each device side must contain the previous one, so segments are well defined.
    chain: list[GraphCut] = []
    for cut in cuts:
        if not chain or (chain[-1].prefix & ~cut.prefix) == 0 and chain[-1].prefix != cut.prefix:
            chain.append(cut)
    return chain
