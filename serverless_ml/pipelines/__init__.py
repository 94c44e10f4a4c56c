"""The jobs: each a function from a spec, a store and options to a report."""
