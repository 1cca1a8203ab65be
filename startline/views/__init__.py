"""The result views: the terminal summary, report.html, compare, the simulator's tables — each
reading summary.json (or a simulation's results) through ``rows``, the one place that chooses what
rows a table shows."""
