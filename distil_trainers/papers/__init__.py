"""The papers' multi-stage comparisons and their reporting, built on the library and apart from it.

Each ``*_pipeline`` module reproduces one paper's comparison (teacher, students, baselines, a results table) and runs
as ``python -m distil_trainers.papers.<module> --config <yaml>``; ``workflow`` makes its stages resumable, ``reports``,
``plots`` and ``efficiency`` write what it measured, ``baselines`` and ``hierarchical`` are the HASOC paper's models,
``crosslingual`` the gradual cross-lingual schedule, and ``cli`` the ``distil-trainers`` command. The library
(``distil_trainers`` outside this package) never imports anything from here: see docs/layout.md.
"""
