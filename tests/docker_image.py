"""Build the tiny image the docker tests use, from Debian's busybox-static (no pulls)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from typing import Any

IMAGE = "greenloop-test/busybox:latest"


def ensure_image(client: Any) -> str:
    """Import :data:`IMAGE` into the engine unless it is already there."""
    import docker.errors

    try:
        client.images.get(IMAGE)
        return IMAGE
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox not found: apt-get install busybox-static")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in ("bin", "tmp", "etc", "root"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(os.path.realpath(busybox), arcname="bin/busybox")
        for applet in applets.stdout.split():
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
    client.api.import_image_from_data(
        buffer.getvalue(), repository=IMAGE.split(":")[0], tag="latest", changes=["ENV PATH=/bin"]
    )
    return IMAGE
