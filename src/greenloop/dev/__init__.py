"""``greenloop dev``: build every green tree, publish it atomically, and serve it.

The layer above the dev loop (:mod:`greenloop.devloop`, which judges the tree)
and the dev server (:mod:`greenloop.server`): :mod:`~greenloop.dev.builder`
runs the build pipeline through the engine, :mod:`~greenloop.dev.publisher`
keeps the latest-green pointer, :mod:`~greenloop.dev.builds` turns green edges
into builds, and :mod:`~greenloop.dev.session` opens and closes a session.
"""
