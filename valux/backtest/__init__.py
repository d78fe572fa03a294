"""Backtests and parameter sweeps on the real valux actors (``python -m valux.backtest``).

``data`` — the signals file, the replay timeline and sweep grids; ``engine`` — one
backtest on a fresh actor system; ``report`` — equity, drawdown, win rate, tables and
plots; ``sweep`` — grid points as Ray tasks; ``sample`` — seeded sample inputs. Usage in
``valux/backtest/__main__.py``.
"""
