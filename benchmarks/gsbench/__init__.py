"""gsbench: gitsync against the git CLI doing git-sync's command sequence, in the same run.

The package is the benchmark's sections, one job per module; ``benchmarks/run.py`` is the one
command (``make bench``). Standard library only, so it runs before gitsync's dependencies do.

- ``params``: paths, timeouts, periods: the knobs every figure depends on, in one place.
- ``procs``: children with hard timeouts and clean rusage (the spawner), /proc readings.
- ``clients``: gitsync as a one-time run or a looping process; the environments both sides get.
- ``gitseq``: the git CLI doing git-sync's sequence (the baseline of every ratio).
- ``upstream``: generated repositories (git fast-import) and moving their branch.
- ``corpus``: the real repositories of /work/shared/corpus, replayed one commit at a time.
- ``httpserve``: git http-backend behind a small HTTP server that counts response bytes
  (a separate process; also runnable on its own).
- ``measure``: the measured figure (``Cell``), the table row, and the measuring loops.
- ``cases``: the sections (files, http, startup, manydirs, corpus).
- ``targets``: the project's targets and the PASS/FAIL verdicts.
- ``report``: the table and results.json.
- ``cli``: arguments and the run.
"""
