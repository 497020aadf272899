"""The seed comparison of the method's variants (Tables 5/6): run specs, runs, report.

`runner` drives every (row, seed) run; `rows` builds each run's config, `runs` trains,
evaluates and calibrates one run, `report` writes compare.json/.md/.png. The command line
is wss.compare.
"""
