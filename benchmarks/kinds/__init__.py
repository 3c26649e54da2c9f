"""Run kinds beyond ``online`` and ``offline``: one module per kind.

An algorithm registered with ``kind="<name>"`` is trained and tabulated by the
module ``benchmarks.kinds.<name>``, which defines:

- ``NEEDS_DATA: bool``: whether its tasks carry a dataset (``dataset`` or ``generate``);
- ``TASK_KEYS: dict[str, type]``: task keys it reads besides the common ones; the
  suite validates their types and passes them in :attr:`RunSpec.options`;
- optionally ``REQUIRED_TASK_KEYS: tuple[str, ...]``: its algorithms run only on tasks
  that carry all of these keys, and ``EXCLUSIVE: bool``: tasks that carry them run
  only algorithms of this kind (a multi-objective or a safe task is no task for SAC);
- optionally ``DISPLAY_KEYS: tuple[str, ...]``: those of its task keys that only
  change its table (not a run's outcome), so that editing them reruns nothing;
- ``train(spec: RunSpec) -> dict``: the outcome of one run. It holds at least
  ``curve`` (evaluation points with ``step`` and ``return_mean``), ``final`` and
  ``best`` (points of the curve), like :func:`benchmarks.worker.train_model`,
  which it may call;
- optionally ``table(records: list[dict]) -> list[str]``: markdown lines added to
  ``table.md`` under a heading of the kind's name, for what the common table
  does not show. It gets every record of the sweep (so that it can show
  baselines of other kinds beside its own) and picks those it tabulates.
"""
