"""Every figure and table of the paper's four experiments, from stored sweep records only.

::

    hierbench figures --out results/paper [--records-root results/sweeps] [--quick]
    make figures                 # the same, into results/paper/

Nothing here runs a fit: it reads the records that ``hierbench sweep EXPERIMENT`` appended to
``<records-root>/<experiment>[-quick]/records.jsonl`` and writes, per experiment, a figure (PNG and
PDF) and a table (markdown and CSV), plus an index ``README.md`` that lists every artifact with the
command that made it, its records file, and the git SHAs and dirty flags found in the records' ``env``.
An experiment without records gets a message (``no records for experiment X: run `make sweep
EXP=X```), and the others are still made.  ``--quick`` reads the ``<experiment>-quick`` records and,
unless ``--out`` is given, writes to ``results/paper-quick/`` so that it never overwrites the real
figures.

The four experiments (Agrawal & Domke, NeurIPS 2021), one recipe module each:

1. ``scaling`` (:mod:`~hierbench.reports.paper.scaling`): the ELBO gap per group against time and
   steps, one column per N; the table of times to target; the headline ratio (amortized vs branch).
2. ``accuracy`` (:mod:`~hierbench.reports.paper.accuracy`): final KL/N and standardized mean errors
   against N at an equal budget, mean ± 1 sd over seeds.
3. ``movielens`` (:mod:`~hierbench.reports.paper.movielens`): the ELBO and the held-out log predictive
   density against time, per (dataset, N).
4. ``theta_collapse`` (:mod:`~hierbench.reports.paper.theta_collapse`): final KL/N of amortized VI
   with and without q(z_i | θ)'s conditioning on θ, and the gap, paired by seed.

Only records with status ``ok`` are plotted and enter the time-to-target columns and the means; the
others appear in the tables with their status and are named on the figures.  Where a sweep recorded a
cell more than once (``--retry-failed`` after an error), the last record that is not an error is used.

The rest, one concern a file: :mod:`~hierbench.reports.paper.sources` (records in: the file, one
record per cell, provenance), :mod:`~hierbench.reports.paper.runs` (a record's N, label, status, the
headline's picks, means over seeds), :mod:`~hierbench.reports.paper.markdown` (tables as markdown
and CSV), :mod:`~hierbench.reports.paper.plotting` (what every figure shares),
:mod:`~hierbench.reports.paper.experiments` (the four, in order), :mod:`~hierbench.reports.paper.index`
(the index), :mod:`~hierbench.reports.paper.make` (:func:`make_paper`) and
:mod:`~hierbench.reports.paper.command` (the command line).
"""

from hierbench.reports.paper.command import main
from hierbench.reports.paper.experiments import EXPERIMENTS, FIGURE_TEXT, STEMS, TITLES
from hierbench.reports.paper.make import PaperResult, make_paper
from hierbench.reports.paper.runs import (
    is_amortized_moments,
    is_amortized_potential,
    is_branch_full,
    num_groups,
)
from hierbench.reports.paper.scaling import headline_ratio, headline_sentence, headline_spread
from hierbench.reports.paper.sources import Source, dedupe, load_source, records_path

__all__ = [
    "EXPERIMENTS",
    "FIGURE_TEXT",
    "STEMS",
    "TITLES",
    "PaperResult",
    "Source",
    "dedupe",
    "headline_ratio",
    "headline_sentence",
    "headline_spread",
    "is_amortized_moments",
    "is_amortized_potential",
    "is_branch_full",
    "load_source",
    "main",
    "make_paper",
    "num_groups",
    "records_path",
]
