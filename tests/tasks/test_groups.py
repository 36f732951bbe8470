import itertools

import pytest
import torch

from selrope.tasks import get_group, prefix_products
from selrope.tasks.groups import _is_even

ORDERS = {
    "Z2": 2,
    "parity": 2,
    "S2": 2,
    "Z3": 3,
    "A3": 3,
    "Z7": 7,
    "S3": 6,
    "S4": 24,
    "A4": 12,
    "A5": 60,
    "S5": 120,
    "A5xZ2": 120,
    "Z2xZ2xZ3": 12,
}


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_orders_and_axioms(name):
    g = get_group(name)
    table = g.table
    assert g.order == ORDERS[name] == len(set(g.elements))
    assert g.elements[0] == tuple(range(g.degree))
    ids = torch.arange(g.order)
    # identity, Latin square (closure + cancellation), inverses
    assert torch.equal(table[0], ids) and torch.equal(table[:, 0], ids)
    assert all(torch.equal(row.sort().values, ids) for row in table)
    assert torch.all(table[ids, g.inverses] == 0) and torch.all(table[g.inverses, ids] == 0)
    # associativity on every triple: (ab)c == a(bc)
    left = table[table[:, :, None].expand(-1, -1, g.order), ids[None, None, :]]
    right = table[ids[:, None, None], table[None, :, :].expand(g.order, -1, -1)]
    assert torch.equal(left, right)


@pytest.mark.parametrize("name", ["S3", "A4", "A5xZ2"])
def test_table_is_apply_left_then_right(name):
    g = get_group(name)
    for i, j in itertools.product(range(0, g.order, 5), range(0, g.order, 7)):
        a, b = g.elements[i], g.elements[j]
        assert g.elements[g.multiply(i, j)] == tuple(b[a[k]] for k in range(g.degree))


def test_alternating_are_even_and_symmetric_non_abelian():
    for n in (3, 4, 5):
        a = get_group(f"A{n}")
        assert all(_is_even(p) for p in a.elements)
        assert set(a.elements) == {p for p in itertools.permutations(range(n)) if _is_even(p)}
    s3 = get_group("S3")
    assert not torch.equal(s3.table, s3.table.T)
    assert torch.equal(get_group("Z5").table, get_group("Z5").table.T)


def test_cyclic_is_addition_mod_n():
    g = get_group("Z6")
    i, j = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    assert torch.equal(g.table, (i + j) % 6)


def test_product_factors_commute_and_embed():
    g, a5, z2 = get_group("A5xZ2"), get_group("A5"), get_group("Z2")
    for i, j in [(3, 17), (59, 2), (10, 44)]:
        for u, v in [(0, 1), (1, 1)]:
            x, y = i * 2 + u, j * 2 + v
            assert g.multiply(x, y) == a5.multiply(i, j) * 2 + z2.multiply(u, v)


def test_prefix_products_match_brute_force():
    g = get_group("S4")
    words = torch.randint(0, g.order, (20, 15), generator=torch.Generator().manual_seed(3))
    states = prefix_products(g, words)
    for n in range(20):
        perm = tuple(range(g.degree))
        for t in range(15):
            perm = g.compose(perm, g.elements[int(words[n, t])])
            assert g.index(perm) == states[n, t]


@pytest.mark.parametrize("bad", ["Q8", "S1", "A2", "Z1", "S7", "A5x", "", "s3", 5])
def test_bad_group_names(bad):
    with pytest.raises(ValueError):
        get_group(bad)
