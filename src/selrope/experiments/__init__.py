"""Experiments: a run (``RunConfig``, resolved from options by ``build_run``), the runner that
trains it into its folder (``run_one``), grids of runs (``grid_runs``, ``check_grid``,
``run_grid``), the option table of the command line, and the results writer."""

from .config import RunConfig, build_run
from .options import Option, all_options, first_grid_cell, read_config_files, sort_options
from .positions import ABSOLUTE_POSITIONS, BASELINE_ROPE, POSITIONS, rotary_preset
from .results import format_table, write_results
from .runner import check_grid, grid_runs, run_grid, run_one

ROTARY_NAMES = POSITIONS
"""``POSITIONS`` under the name the command line and older code use."""

__all__ = [
    "ABSOLUTE_POSITIONS",
    "BASELINE_ROPE",
    "POSITIONS",
    "ROTARY_NAMES",
    "Option",
    "RunConfig",
    "all_options",
    "build_run",
    "check_grid",
    "first_grid_cell",
    "format_table",
    "grid_runs",
    "read_config_files",
    "rotary_preset",
    "run_grid",
    "run_one",
    "sort_options",
    "write_results",
]
