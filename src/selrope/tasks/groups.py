"""Finite groups as permutation groups, with a Cayley table computed by composing permutations.

Elements are permutations of {0, ..., n-1} in one-line notation: the tuple `p` maps `i -> p[i]`.
The identity is always element 0, and token `i` of a state-tracking task is element `i`.

Product convention (used everywhere in `selrope.tasks`): `a · b` means "apply a, then b", i.e.
`(a · b)[i] = b[a[i]]`. A running product `x1 · x2 · ... · xt` is therefore the state reached by
applying x1 first and xt last, which is how a word problem is read left to right.

Groups: `Zn` (cyclic shifts i -> i + k mod n), `Sn` (all permutations), `An` (even
permutations) and direct products written "A5xZ2" (permutations of the disjoint union: the
second factor acts on points n1 .. n1+n2-1). `S2` and `Z2` are both parity.
"""

from __future__ import annotations

import itertools
import re
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

MAX_GROUP_ORDER = 1024
_FACTOR = re.compile(r"^([ZSA])(\d+)$")


def _is_even(perm: tuple[int, ...]) -> bool:
    """Parity of a permutation by counting inversions."""
    inversions = sum(
        1 for i in range(len(perm)) for j in range(i + 1, len(perm)) if perm[i] > perm[j]
    )
    return inversions % 2 == 0


class PermutationGroup:
    """A finite group given by its permutations; element 0 is the identity.

    Attributes:
        name: e.g. "S3", "A5xZ2".
        elements: tuple of permutations (tuples of ints, one-line notation), identity first.
        order: number of elements.
        degree: number of points permuted.
        table: LongTensor (order, order); `table[i, j]` is the index of `elements[i] · elements[j]`
            (apply i, then j). Treat it as read-only (groups are cached and shared).
        inverses: LongTensor (order,); `inverses[i]` is the index of the inverse of element i.
    """

    def __init__(self, name: str, elements: list[tuple[int, ...]]) -> None:
        degree = len(elements[0])
        identity = tuple(range(degree))
        if elements[0] != identity:
            raise ValueError(f"{name}: the first element must be the identity")
        self.name = name
        self.elements = tuple(tuple(int(v) for v in p) for p in elements)
        self.order = len(self.elements)
        self.degree = degree
        perms = np.asarray(self.elements, dtype=np.int64)  # (order, degree)
        # composed[i, j, k] = perms[j, perms[i, k]]: apply i, then j.
        composed = perms[np.arange(self.order)[None, :, None], perms[:, None, :]]
        table = self._indices_of(perms, composed.reshape(-1, degree)).reshape(self.order, -1)
        self._table = table
        self.table = torch.from_numpy(table)
        self.inverses = torch.from_numpy(np.argmax(table == 0, axis=1))

    @staticmethod
    def _indices_of(perms: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Index into `perms` of each row of `queries`; ValueError if one is not an element."""
        radix = perms.shape[1] ** np.arange(perms.shape[1], dtype=np.int64)
        codes = perms @ radix
        sorter = np.argsort(codes, kind="stable")
        query_codes = queries @ radix
        pos = np.searchsorted(codes, query_codes, sorter=sorter)
        pos = np.minimum(pos, len(codes) - 1)
        found = sorter[pos]
        if not np.array_equal(codes[found], query_codes):
            raise ValueError("the given permutations are not closed under composition")
        return found

    def multiply(self, i: int, j: int) -> int:
        """Index of `elements[i] · elements[j]` (apply element i, then element j)."""
        return int(self._table[i, j])

    def compose(self, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
        """`a · b` on raw permutations: apply a, then b."""
        return tuple(b[a[k]] for k in range(len(a)))

    def index(self, perm: tuple[int, ...]) -> int:
        """Index of a permutation given in one-line notation."""
        return self.elements.index(tuple(perm))

    def __repr__(self) -> str:
        return f"PermutationGroup({self.name!r}, order={self.order}, degree={self.degree})"


def _cyclic(n: int) -> list[tuple[int, ...]]:
    return [tuple((i + k) % n for i in range(n)) for k in range(n)]


def _symmetric(n: int) -> list[tuple[int, ...]]:
    # itertools yields lexicographic order, so the identity comes first.
    return list(itertools.permutations(range(n)))


def _alternating(n: int) -> list[tuple[int, ...]]:
    return [p for p in itertools.permutations(range(n)) if _is_even(p)]


def _factor_order(kind: str, n: int) -> int:
    if kind == "Z":
        return n
    full = 1
    for k in range(2, n + 1):
        full *= k
    return full if kind == "S" else full // 2


def _direct_product(
    first: list[tuple[int, ...]], second: list[tuple[int, ...]]
) -> list[tuple[int, ...]]:
    """(a, b) acting on the disjoint union; element (i, j) gets index i * |second| + j."""
    shift = len(first[0])
    return [tuple(a) + tuple(v + shift for v in b) for a in first for b in second]


@lru_cache(maxsize=32)
def get_group(name: str) -> PermutationGroup:
    """Build (and cache) a group by name.

    Args:
        name: "Zn" (n >= 2), "Sn" (n >= 2), "An" (n >= 3), or a direct product of those joined by
            "x", e.g. "A5xZ2" or "Z2xZ2xZ3". "parity" is an alias of "Z2". Order at most 1024.

    Returns:
        A `PermutationGroup` whose element 0 is the identity.
    """
    if not isinstance(name, str):
        raise ValueError(f"group must be a string like 'S3' or 'A5xZ2'; got {name!r}")
    canonical = "Z2" if name.strip().lower() == "parity" else name.strip()
    factors = []
    order = 1
    for part in canonical.split("x"):
        match = _FACTOR.match(part)
        if match is None:
            raise ValueError(
                f"unknown group {name!r}; allowed: 'Zn' (n>=2), 'Sn' (n>=2), 'An' (n>=3), "
                "direct products like 'A5xZ2', or 'parity'"
            )
        kind, n = match.group(1), int(match.group(2))
        if (kind in "ZS" and n < 2) or (kind == "A" and n < 3):
            raise ValueError(
                f"group {part!r} in {name!r} is trivial or undefined; use n >= 2 "
                "for Z and S and n >= 3 for A"
            )
        order *= _factor_order(kind, n)
        if order > MAX_GROUP_ORDER:
            raise ValueError(f"group {name!r} has order > {MAX_GROUP_ORDER}, too large")
        factors.append((kind, n))
    builders = {"Z": _cyclic, "S": _symmetric, "A": _alternating}
    elements = builders[factors[0][0]](factors[0][1])
    for kind, n in factors[1:]:
        elements = _direct_product(elements, builders[kind](n))
    return PermutationGroup(canonical, elements)


def prefix_products(group: PermutationGroup, words: Tensor) -> Tensor:
    """Running products of words over a group, by repeated Cayley-table lookup.

    Args:
        group: the group.
        words: LongTensor (N, L) of element indices.

    Returns:
        LongTensor (N, L); entry [n, t] is the index of words[n, 0] · words[n, 1] · ... ·
        words[n, t] (left to right: apply words[n, 0] first).
    """
    table = group.table
    out = torch.empty_like(words)
    state = torch.zeros(words.shape[0], dtype=torch.long)
    for t in range(words.shape[1]):
        state = table[state, words[:, t]]
        out[:, t] = state
    return out
