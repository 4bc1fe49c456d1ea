"""The example site's pipelines: `build` makes the site `greenloop dev` serves."""

import greenloop as gl


@gl.pipeline("build")
def build():
    gl.sh("python3 build.py dist", label="site", artifacts=["dist"])


@gl.pipeline("ci")
def ci():
    gl.sh("python3 build.py dist && test -s dist/index.html", label="build")
