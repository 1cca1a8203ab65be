"""Live runs: orchestration and signals (``run``), worker processes (``workers``), their
placement on Dask (``dask``), ``check --connect`` (``check``) and the live view (``view``)."""
