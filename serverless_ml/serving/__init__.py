"""Serving the champion: the rows a served model accepts and its answer (:mod:`.schema`,
pure), the registered model's pyfunc flavor (:mod:`.flavor`) and ``sml serve``
(:mod:`.server`, :mod:`.recorder`). Importing the package imports nothing."""
