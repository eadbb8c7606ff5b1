"""The paper's four experiments, in order: their names, titles, artifact stems and figure captions.

Each experiment's recipe (its table, figure and ``make_*``) is a module of its own; this is the list
of them that :func:`~hierbench.reports.paper.make.make_paper` and the index go through.
"""

from __future__ import annotations

from types import ModuleType

from hierbench.reports.paper import accuracy, movielens, scaling, theta_collapse

RECIPES: dict[str, ModuleType] = {
    "scaling": scaling,
    "accuracy": accuracy,
    "movielens": movielens,
    "theta_collapse": theta_collapse,
}
EXPERIMENTS = tuple(RECIPES)
TITLES = {name: recipe.TITLE for name, recipe in RECIPES.items()}
STEMS = {name: (recipe.FIGURE, recipe.TABLE) for name, recipe in RECIPES.items()}  # (figure, table)
FIGURE_TEXT = {name: recipe.FIGURE_TEXT for name, recipe in RECIPES.items()}
