"""Built-in method adapters: each module registers methods with `@interpbench.method`."""
