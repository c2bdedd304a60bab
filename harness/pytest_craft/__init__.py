"""craft's conformance harness: the pytest plugin, the client history recorder
(history.py) and the checkers that judge a history (checkers.py)."""
