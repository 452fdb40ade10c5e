"""One random mutation of a net (the genetic-NAS paper, without its code's bugs).

A mutation picks one gene (``repeats`` / ``expansions`` / ``channels``) and one stage uniformly
and gives that single position a new value drawn uniformly from the gene's *mutation alphabet*
(``search_space.alphabets``). The new value must change the net: it differs from the old value
and the resolved :class:`~tinyevo.space.NetSpec` differs from the parent's (two channel values
that round to the same width, e.g. 2 and 4 -> 8, would give the same network under another
name). Drawing uniformly among the values that pass is the same distribution as "redraw until
it differs". A (gene, stage) pair with no such value is skipped and a fresh pair is drawn.
Only the chosen stage changes: every other stage and gene is kept (the reference code's channel
mutation overwrote every later stage; its expansion mutation compared against the wrong list).

Trainability guards (``constraints.min_width``, :data:`tinyevo.space.constraints.GUARDS`): with
``constraints`` given, a value also passes only when the child satisfies every guard the parent
satisfies, so a guard-satisfying parent never has a violating child. The draw stays uniform
among the values that pass, and with no guard set the random stream is exactly the unguarded one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from tinyevo.space import GENES, Genes, SearchSpace
from tinyevo.space.constraints import Constraints, as_constraints


@dataclass(frozen=True)
class Mutation:
    gene: str
    stage: int  # 1-based, as in the search-space error messages
    old: int
    new: int


def _candidates(space: SearchSpace, genes: Genes, gene: str, stage0: int, parent_spec, keep=None) -> list[int]:
    old = getattr(genes, gene)[stage0]
    out = []
    for v in space.alphabets[gene]:
        if v == old:
            continue
        spec = space.netspec(genes.replace(gene, stage0, v))
        if spec == parent_spec:
            continue
        if keep is not None and not keep(spec):
            continue
        out.append(int(v))
    return out


def _keeper(constraints, parent_spec):
    if constraints is None:
        return None
    cons = as_constraints(constraints)
    return cons.keeps_guards(parent_spec) if cons.guards else None


def mutable_positions(space: SearchSpace, genes: Genes,
                      constraints: Constraints | Mapping[str, Any] | None = None) -> list[tuple[str, int]]:
    """(gene, 0-based stage) pairs that admit at least one net-changing (and guard-keeping) value."""
    spec = space.netspec(genes)
    keep = _keeper(constraints, spec)
    return [(g, s) for g in GENES for s in range(space.n_stages) if _candidates(space, genes, g, s, spec, keep)]


def mutate(space: SearchSpace, genes: Genes, rng: np.random.Generator,
           constraints: Constraints | Mapping[str, Any] | None = None) -> tuple[Genes, Mutation]:
    """Return the child genes and the mutation applied, using only ``rng`` for randomness; with
    ``constraints``, the child keeps every trainability guard the parent satisfies."""
    spec = space.netspec(genes)
    keep = _keeper(constraints, spec)
    tried: set[tuple[int, int]] = set()
    total = len(GENES) * space.n_stages
    while len(tried) < total:
        gi = int(rng.integers(len(GENES)))
        s = int(rng.integers(space.n_stages))
        tried.add((gi, s))
        gene = GENES[gi]
        cands = _candidates(space, genes, gene, s, spec, keep)
        if not cands:
            continue
        new = cands[int(rng.integers(len(cands)))]
        old = int(getattr(genes, gene)[s])
        return genes.replace(gene, s, new), Mutation(gene=gene, stage=s + 1, old=old, new=new)
    guards = ""
    if keep is not None:
        held = ", ".join(f"constraints.{k} = {v}" for k, v in as_constraints(constraints).guards.items())
        guards = f" and keeps the trainability guards it satisfies ({held})"
    raise ValueError(
        f"net {space.encode(genes)!r} cannot be mutated: no gene/stage has a value in "
        f"'search_space.alphabets' that changes the network{guards} "
        f"({ {g: list(space.alphabets[g]) for g in GENES} })"
    )
