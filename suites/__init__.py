"""Built-in suites: each module declares cases with `@interpbench.case`."""
