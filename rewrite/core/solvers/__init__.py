"""The solvers of an insert: W' = W + Lambda D such that the target piece maps the goal keys to the goal values.

    problem.py  InsertProblem (what every solver is given), projected_conv, option_values
    fast.py     the closed form through the inverted activation, then a short Adam polish (the default)
    adam.py     the paper's Adam on the whole weight, re-projected; Adam on Lambda

Each is registered with its options in rewrite/formats/registry.py (SOLVERS) and run as
`SOLVERS[name].run(problem, options, update_callback) -> losses`.
"""

from rewrite.core.solvers.adam import insert_linear, insert_original, run_linear, run_original
from rewrite.core.solvers.fast import insert_fast, run_fast
from rewrite.core.solvers.problem import InsertProblem, option_values, projected_conv

__all__ = ['InsertProblem', 'insert_fast', 'insert_linear', 'insert_original', 'option_values', 'projected_conv',
           'run_fast', 'run_linear', 'run_original']
