"""Per-operation energy table (45 nm CMOS, 0.9 V) and the rules that extend it to other widths.

Source (the numbers of :data:`HOROWITZ_2014`):
    M. Horowitz, "1.1 Computing's energy problem (and what we can do about it)", 2014 IEEE
    International Solid-State Circuits Conference Digest of Technical Papers (ISSCC), San
    Francisco, CA, 2014, pp. 10-14, doi:10.1109/ISSCC.2014.6757323 (the energy table, 45 nm,
    0.9 V).

    The 32-bit integer and float entries (int32 add 0.1 pJ, int32 mult 3.1 pJ, fp32 add 0.9 pJ,
    fp32 mult 3.7 pJ) and the 8 KB cache 64-bit access (10 pJ) were checked against a secondary
    source that quotes the same table (Frontiers in Neurology 2022, PMC8934428, Table 3). The
    8-bit and 16-bit entries and the larger memories are quoted from the paper's table as widely
    reproduced and were not checked against a second source here.

Modelling assumptions (ours, not Horowitz's):

* **Integer adders** scale linearly with width (ripple/prefix adder area ~ bits). A width not in
  the table is scaled from the listed width nearest to it (ties: the wider one):
  ``E_add(b) = E_add(b_ref) * b / b_ref`` (int8 0.03 pJ -> 0.12 pJ at 32 bits vs the listed 0.1:
  the rule is within a factor 1.2 of the table).
* **Integer multipliers** scale with the product of the operand widths (array multiplier area
  ~ a * b): ``E_mult(a, b) = E_mult(r, r) * a * b / r**2`` from the listed square width ``r``
  nearest to ``sqrt(a * b)`` (int8 0.2 pJ -> 3.2 pJ at 32x32 vs the listed 3.1).
* **Compare, shift, xor** cost one add of the same width (a compare is a subtraction; a barrel
  shifter and an xor row are no larger than an adder): an upper bound for constant shifts.
* **Float** ops exist only for 16 and 32 bits (the table's widths); other widths raise.
* **Memory**: energy per bit read = listed 64-bit access / 64. Writes cost as much as reads.
* **Synaptic operation** (spiking): one accumulate of a weight into a membrane potential of
  ``state_bits`` width = one integer add at that width (:func:`synop_energy_pj`); the weight
  fetch is counted separately as a memory read.

>>> op_energy_pj("add", "int", 32)
0.1
>>> round(op_energy_pj("mult", "int", 8, 4), 4)       # 8x4 multiplier: half the 8x8 one
0.1
>>> round(op_energy_pj("add", "int", 16), 4)          # 8 and 32 equally near in log2: tie -> 32
0.05
>>> memory_read_energy_pj(64, "sram_8kb")
10.0
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SOURCE = ('M. Horowitz, "1.1 Computing\'s energy problem (and what we can do about it)", ISSCC 2014, '
          'pp. 10-14, doi:10.1109/ISSCC.2014.6757323 (45 nm, 0.9 V)')

ARITH_OPS = ("add", "mult")
ALIASES = {"cmp": "add", "shift": "add", "xor": "add", "sub": "add"}
"""Ops costed as another op of the same width (see the module docstring)."""
DTYPES = ("int", "fp")
MEMORY_LEVELS = ("sram_8kb", "sram_32kb", "sram_1mb", "dram")


@dataclass(frozen=True)
class EnergyEntry:
    """One measured row: ``op`` on ``dtype`` operands of ``bits`` width costs ``pj`` picojoules."""

    op: str
    dtype: str
    bits: int
    pj: float


HOROWITZ_2014: tuple[EnergyEntry, ...] = (
    EnergyEntry("add", "int", 8, 0.03),
    EnergyEntry("add", "int", 32, 0.1),
    EnergyEntry("add", "fp", 16, 0.4),
    EnergyEntry("add", "fp", 32, 0.9),
    EnergyEntry("mult", "int", 8, 0.2),
    EnergyEntry("mult", "int", 32, 3.1),
    EnergyEntry("mult", "fp", 16, 1.1),
    EnergyEntry("mult", "fp", 32, 3.7),
)
"""Arithmetic rows of the Horowitz (2014) table, 45 nm."""

MEMORY_64BIT_PJ: dict[str, tuple[float, float]] = {
    "sram_8kb": (10.0, 10.0),
    "sram_32kb": (20.0, 20.0),
    "sram_1mb": (100.0, 100.0),
    "dram": (1300.0, 2600.0),
}
"""64-bit access energy (low, high) in pJ per memory level; Horowitz gives DRAM as 1.3-2.6 nJ."""


def _table(op: str, dtype: str) -> dict[int, float]:
    return {e.bits: e.pj for e in HOROWITZ_2014 if e.op == op and e.dtype == dtype}


def _nearest(widths, target: float) -> int:
    # nearest in log2 distance; ties go to the wider reference
    return min(sorted(widths, reverse=True), key=lambda w: abs(math.log2(w) - math.log2(target)))


def op_energy_pj(op: str, dtype: str, bits: int, bits_b: int | None = None) -> float:
    """Energy (pJ) of one ``op`` on ``bits``-wide operands (``bits x bits_b`` for ``mult``).

    Args:
        op: ``"add"``, ``"mult"`` or an alias in :data:`ALIASES` (``cmp``, ``shift``, ``xor``,
            ``sub``: costed as an add).
        dtype: ``"int"`` or ``"fp"``.
        bits: operand width (the accumulator width for an add); 1..64.
        bits_b: second operand width of an integer multiply (default ``bits``).

    Returns:
        picojoules, from :data:`HOROWITZ_2014` and the scaling rules of the module docstring.

    >>> op_energy_pj("mult", "fp", 32)
    3.7
    >>> op_energy_pj("mult", "fp", 8)
    Traceback (most recent call last):
    ...
    ValueError: float op 'mult' at bits=8 is not in the table; allowed widths: [16, 32]
    """
    op = ALIASES.get(op, op)
    if op not in ARITH_OPS:
        raise ValueError(f"op={op!r} is invalid; allowed: {ARITH_OPS + tuple(ALIASES)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is invalid; allowed: {DTYPES}")
    for name, b in (("bits", bits), ("bits_b", bits if bits_b is None else bits_b)):
        if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= 64:
            raise ValueError(f"{name}={b!r} is invalid; allowed: an int in [1, 64]")
    table = _table(op, dtype)
    if dtype == "fp":
        if bits not in table or (bits_b is not None and bits_b != bits):
            raise ValueError(f"float op {op!r} at bits={bits} is not in the table; allowed widths: {sorted(table)}")
        return table[bits]
    if op == "add":
        ref = _nearest(table, bits)
        return table[ref] * bits / ref
    b2 = bits if bits_b is None else bits_b
    ref = _nearest(table, math.sqrt(bits * b2))
    return table[ref] * bits * b2 / ref ** 2


def synop_energy_pj(state_bits: int) -> float:
    """One synaptic operation of a spiking network: accumulate a weight into a ``state_bits``
    membrane potential (an integer add at that width; weight fetch not included).

    >>> synop_energy_pj(8)
    0.03
    """
    return op_energy_pj("add", "int", state_bits)


def memory_read_energy_pj(n_bits: float, level: str = "sram_8kb", bound: str = "low") -> float:
    """Energy (pJ) to read ``n_bits`` from ``level``: ``n_bits / 64 * E_64bit``.

    Args:
        n_bits: bits read (>= 0).
        level: one of :data:`MEMORY_LEVELS`.
        bound: ``"low"`` or ``"high"`` end of the quoted range (differs for DRAM only).

    >>> memory_read_energy_pj(128, "dram", "high")
    5200.0
    """
    if level not in MEMORY_64BIT_PJ:
        raise ValueError(f"level={level!r} is invalid; allowed: {MEMORY_LEVELS}")
    if bound not in ("low", "high"):
        raise ValueError(f"bound={bound!r} is invalid; allowed: ('low', 'high')")
    if not n_bits >= 0:
        raise ValueError(f"n_bits={n_bits!r} is invalid; allowed: a number >= 0")
    lo, hi = MEMORY_64BIT_PJ[level]
    return float(n_bits) / 64.0 * (lo if bound == "low" else hi)
