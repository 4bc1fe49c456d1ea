"""Fleet mode: one resident dev loop for every worktree of a git repository.

``greenloop serve`` (:mod:`greenloop.fleet.fleet`) runs one watch loop per
worktree, all sharing a bound on rounds checking at once and the language
servers; ``check``, ``watch`` and ``status`` in a worktree ask it over a Unix
socket (:mod:`greenloop.fleet.client`) and work on their own when it is not
running. See docs/fleet.md.
"""
