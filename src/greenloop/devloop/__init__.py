"""The always-green dev loop: watcher → checkers → model ─StateEvent→ everyone.

``check_once`` gives a one-shot verdict; ``WatchLoop`` keeps one up to date as
files change. The model (:mod:`greenloop.devloop.model`) is the only thing that
decides green; everything else reports to it or listens to it.
"""
