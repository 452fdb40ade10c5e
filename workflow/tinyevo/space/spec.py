"""Search space, genes, fixed-size architecture strings and the resolved NetSpec.

Genes are three whole vectors with one value per stage (the genetic-NAS paper):
``repeats`` (blocks per stage), ``expansions`` (expansion factor t) and ``channels`` (stage
output width before rounding).

An architecture string has one fixed-width group per stage, groups joined by ``-``::

    r1e1c016-r2e6c024-r3e6c032-r4e6c064-r3e6c096-r3e6c160-r1e6c320

Each group is ``r<repeats>e<expansion>c<channels>``; the number of digits of every field is
fixed by the space (the widest allowed value), so every net of a space has a string of the same
length. ``decode`` checks every character and raises ``ValueError`` naming the stage, the field
and the character position.

A :class:`NetSpec` is the fully resolved network (per block: in/hidden/out channels, stride,
kernel, residual). It is what every builder consumes (torch, Keras, C++) and what pruning edits,
so it can hold arbitrary per-layer widths, not only values the genes can produce.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from tinyevo.space.layers import Layer, walk

GENES = ("repeats", "expansions", "channels")
_FIELD_LETTER = {"repeats": "r", "expansions": "e", "channels": "c"}


def round_width(c: float, divisor: int = 8) -> int:
    """MobileNetV2 width rounding: nearest multiple of ``divisor`` (at least ``divisor``), one
    more step if that loses more than 10 %."""
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    if new < 0.9 * c:
        new += divisor
    return new


@dataclass(frozen=True)
class Genes:
    repeats: tuple[int, ...]
    expansions: tuple[int, ...]
    channels: tuple[int, ...]

    def __post_init__(self) -> None:
        for g in GENES:
            object.__setattr__(self, g, tuple(int(v) for v in getattr(self, g)))
        n = {len(self.repeats), len(self.expansions), len(self.channels)}
        if len(n) != 1:
            raise ValueError(
                f"genes need one value per stage for every gene, got lengths "
                f"repeats={len(self.repeats)}, expansions={len(self.expansions)}, "
                f"channels={len(self.channels)}"
            )

    def replace(self, gene: str, stage: int, value: int) -> "Genes":
        vals = list(getattr(self, gene))
        vals[stage] = int(value)
        d = {g: getattr(self, g) for g in GENES}
        d[gene] = tuple(vals)
        return Genes(**d)

    def as_dict(self) -> dict[str, list[int]]:
        return {g: list(getattr(self, g)) for g in GENES}


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block. ``expand`` False means no 1x1 expansion conv (t == 1): the
    depthwise conv then works on ``cin`` channels and ``hidden == cin``."""

    cin: int
    hidden: int
    cout: int
    stride: int
    kernel: int
    expand: bool
    stage: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


@dataclass(frozen=True)
class NetSpec:
    resolution: int
    in_channels: int
    stem_out: int
    stem_stride: int
    kernel: int
    blocks: tuple[BlockSpec, ...]
    head_out: int
    num_classes: int

    @property
    def feature_size(self) -> int:
        """F: the size of the Flatten output (global pool of the head conv)."""
        return self.head_out

    def layers(self) -> tuple["Layer", ...]:
        """The layers in execution order (:func:`tinyevo.space.layers.walk`), the one walk every
        builder, the cost and memory models and pruning read."""
        return walk(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = [asdict(b) for b in self.blocks]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NetSpec":
        try:
            blocks = tuple(BlockSpec(**b) for b in d["blocks"])
            kw = {k: d[k] for k in ("resolution", "in_channels", "stem_out", "stem_stride",
                                    "kernel", "head_out", "num_classes")}
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a valid NetSpec: {exc}") from None
        spec = cls(blocks=blocks, **kw)
        spec.check()
        return spec

    def check(self) -> None:
        """Raise ValueError when consecutive widths do not chain."""
        prev = self.stem_out
        for i, b in enumerate(self.blocks):
            if b.cin != prev:
                raise ValueError(f"NetSpec block {i}: cin {b.cin} != previous output {prev}")
            if not b.expand and b.hidden != b.cin:
                raise ValueError(f"NetSpec block {i}: no expansion conv but hidden {b.hidden} != cin {b.cin}")
            if min(b.cin, b.hidden, b.cout) < 1:
                raise ValueError(f"NetSpec block {i}: every width must be >= 1")
            prev = b.cout
        if self.head_out < 1 or self.num_classes < 1:
            raise ValueError("NetSpec: head_out and num_classes must be >= 1")


@dataclass(frozen=True)
class SearchSpace:
    resolution: int
    in_channels: int
    num_classes: int
    stem_width: int = 32
    stem_stride: int = 2
    strides: tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)
    head_width: int = 1280
    kernel_size: int = 3
    round_divisor: int = 8
    alphabets: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    grid: Mapping[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)
    population_mode: str = "grid"
    population_size: int = 512
    population_seed: int = 0

    @classmethod
    def from_config(cls, ss: Mapping[str, Any]) -> "SearchSpace":
        """From the resolved ``search_space`` config section."""
        pop = ss["population"]
        return cls(
            resolution=int(ss["resolution"]),
            in_channels=int(ss["channels"]),
            num_classes=int(ss["num_classes"]),
            stem_width=int(ss["stem_width"]),
            stem_stride=int(ss["stem_stride"]),
            strides=tuple(int(s) for s in ss["strides"]),
            head_width=int(ss["head_width"]),
            kernel_size=int(ss["kernel_size"]),
            round_divisor=int(ss["round_divisor"]),
            alphabets={g: tuple(sorted(int(v) for v in ss["alphabets"][g])) for g in GENES},
            grid={g: tuple(tuple(int(v) for v in vec) for vec in pop[g]) for g in ("structures", "expansions", "channels")},
            population_mode=pop["mode"],
            population_size=int(pop["size"]),
            population_seed=int(pop["seed"]),
        )

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    # ----- allowed values and string layout ------------------------------------------------
    def allowed(self, gene: str) -> tuple[int, ...]:
        """Values a gene may take: the mutation alphabet plus every value of the grid."""
        grid_key = "structures" if gene == "repeats" else gene
        vals = set(self.alphabets.get(gene, ()))
        for vec in self.grid.get(grid_key, ()):
            vals.update(vec)
        return tuple(sorted(vals))

    def field_width(self, gene: str) -> int:
        return len(str(max(self.allowed(gene))))

    @property
    def group_width(self) -> int:
        return sum(1 + self.field_width(g) for g in GENES)

    @property
    def string_length(self) -> int:
        return self.n_stages * self.group_width + self.n_stages - 1

    def encode(self, genes: Genes) -> str:
        self.validate_genes(genes)
        groups = []
        for s in range(self.n_stages):
            groups.append("".join(
                f"{_FIELD_LETTER[g]}{getattr(genes, g)[s]:0{self.field_width(g)}d}" for g in GENES
            ))
        return "-".join(groups)

    def decode(self, arch: str) -> Genes:
        if not isinstance(arch, str):
            raise ValueError(f"architecture string must be a str, got {type(arch).__name__}")
        if len(arch) != self.string_length:
            shown = repr(arch) if len(arch) <= 80 else f"{arch[:60]!r}... ({len(arch)} characters)"
            raise ValueError(
                f"architecture string {shown} has length {len(arch)}, expected {self.string_length} "
                f"({self.n_stages} groups of {self.group_width} characters joined by '-')"
            )
        values: dict[str, list[int]] = {g: [] for g in GENES}
        pos = 0
        for s in range(self.n_stages):
            if s > 0:
                if arch[pos] != "-":
                    raise ValueError(f"architecture string {arch!r}: position {pos} should be the separator '-', got {arch[pos]!r}")
                pos += 1
            for g in GENES:
                letter = _FIELD_LETTER[g]
                if arch[pos] != letter:
                    raise ValueError(
                        f"architecture string {arch!r}: stage {s + 1} field {g} must start with "
                        f"{letter!r} at position {pos}, got {arch[pos]!r}"
                    )
                pos += 1
                w = self.field_width(g)
                digits = arch[pos:pos + w]
                for j, ch in enumerate(digits):
                    if ch not in "0123456789":
                        raise ValueError(
                            f"architecture string {arch!r}: stage {s + 1} field {g} has a bad digit "
                            f"{ch!r} at position {pos + j}"
                        )
                v = int(digits)
                if v not in self.allowed(g):
                    raise ValueError(
                        f"architecture string {arch!r}: stage {s + 1} field {g} value {v} at position "
                        f"{pos} is not in the allowed values {list(self.allowed(g))}"
                    )
                values[g].append(v)
                pos += w
        return Genes(**values)

    def validate_genes(self, genes: Genes) -> None:
        for g in GENES:
            vec = getattr(genes, g)
            if len(vec) != self.n_stages:
                raise ValueError(f"gene {g} has {len(vec)} values, the space has {self.n_stages} stages")
            for s, v in enumerate(vec):
                if v not in self.allowed(g):
                    raise ValueError(f"gene {g} stage {s + 1}: value {v} not in {list(self.allowed(g))}")

    # ----- population ------------------------------------------------------------------------
    def initial_population(self) -> list[tuple[int, Genes]]:
        """(index, genes) of the initial population.

        ``grid``: product of whole vectors, index = s * (E*C) + e * C + c (paper: s*64+e*8+c).
        ``random``: ``population_size`` distinct nets drawn per stage from the alphabets with
        ``population_seed``.
        """
        if self.population_mode == "grid":
            S, E, C = (self.grid[k] for k in ("structures", "expansions", "channels"))
            out = []
            for (si, s), (ei, e), (ci, c) in itertools.product(enumerate(S), enumerate(E), enumerate(C)):
                out.append((si * len(E) * len(C) + ei * len(C) + ci, Genes(s, e, c)))
            return out
        rng = random.Random(self.population_seed)
        seen: set[Genes] = set()
        out = []
        total = 1
        for g in GENES:
            total *= len(self.alphabets[g]) ** self.n_stages
        if self.population_size > total:
            raise ValueError(
                f"config key 'search_space.population.size' ({self.population_size}) exceeds the "
                f"number of distinct nets the alphabets allow ({total})"
            )
        while len(out) < self.population_size:
            genes = Genes(*(tuple(rng.choice(self.alphabets[g]) for _ in range(self.n_stages)) for g in GENES))
            if genes not in seen:
                seen.add(genes)
                out.append((len(out), genes))
        return out

    # ----- resolution to a NetSpec ---------------------------------------------------------------
    def netspec(self, genes: Genes | str) -> NetSpec:
        if isinstance(genes, str):
            genes = self.decode(genes)
        blocks = []
        cin = round_width(self.stem_width, self.round_divisor)
        stem = cin
        for s in range(self.n_stages):
            cout = round_width(genes.channels[s], self.round_divisor)
            t = genes.expansions[s]
            for i in range(genes.repeats[s]):
                stride = self.strides[s] if i == 0 else 1
                blocks.append(BlockSpec(cin=cin, hidden=cin * t, cout=cout, stride=stride,
                                        kernel=self.kernel_size, expand=t != 1, stage=s))
                cin = cout
        return NetSpec(resolution=self.resolution, in_channels=self.in_channels, stem_out=stem,
                       stem_stride=self.stem_stride, kernel=self.kernel_size, blocks=tuple(blocks),
                       head_out=self.head_width, num_classes=self.num_classes)

    def iter_arches(self) -> Iterator[tuple[int, str, Genes]]:
        for idx, g in self.initial_population():
            yield idx, self.encode(g), g


def space_from_config(cfg: Mapping[str, Any]) -> SearchSpace:
    """``cfg`` may be the whole resolved config or its ``search_space`` section."""
    ss = cfg["search_space"] if "search_space" in cfg else cfg
    return SearchSpace.from_config(ss)


def genes_from_lists(repeats: Sequence[int], expansions: Sequence[int], channels: Sequence[int]) -> Genes:
    return Genes(tuple(repeats), tuple(expansions), tuple(channels))
