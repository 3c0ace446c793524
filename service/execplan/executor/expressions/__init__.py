"""CEL at run time: the plan's bindings and how they are evaluated, within a budget.

    bindings.py       the decoded binding tree (literals, expressions, templates)
    cel_runtime.py    the one call into the `cel` library (native panics caught)
    cost.py           which expressions are cheap enough to run inline
    evaluation.py     evaluating a binding: inline when cheap, else in the sandbox,
                      through an `Evaluator` the caller chooses; the errors
    sandbox.py        the sandbox process pool with its time and memory budget
    sandbox_child.py  the sandbox process itself

docs/expressions.md describes the budget. The machine (`decide/`) evaluates through
the evaluator it is given; the runtime's (`runtime/evaluations.py`) memoizes
sandboxed outcomes and suspends an execution until its evaluation is in.
"""
