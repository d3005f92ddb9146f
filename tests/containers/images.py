"""Build the images the container tests run, without a registry: a Debian
release's tree from the matrix's cache as the base image (imported again
only when the tree was rebuilt), then socktrace's image from the
repository's Containerfile on top of it (podman caches its layers); the
base image is loaded into docker's daemon too (started if need be).

    python3 tests/containers/images.py ROOTFS
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dockerd import DOCKER, docker, ensure_dockerd
from podman import BASE_IMAGE, LIMITS, PODMAN, SOCKTRACE_IMAGE, podman

TOP = Path(__file__).resolve().parents[2]
# what a chroot of the tree may have mounted while it is imported (the
# directories stay)
SKIP = ("./proc/*", "./sys/*", "./dev/*", "./run/*", "./tmp/*", "./socktrace/*")


def stamp(rootfs: Path) -> str:
    return str(int((rootfs / "var/lib/dpkg/status").stat().st_mtime))


def base_image(rootfs: Path) -> None:
    stamp_ = stamp(rootfs)
    have = podman("image", "inspect", "-f", '{{ index .Labels "socktrace.rootfs" }}', BASE_IMAGE,
                  check=False)
    if have == stamp_:
        print(f"{BASE_IMAGE}: up to date ({rootfs})")
        return
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--one-file-system",
                            *[f"--exclude={s}" for s in SKIP], "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run([*PODMAN, "import", "--change", f"LABEL socktrace.rootfs={stamp_}", "-",
                               BASE_IMAGE], stdin=tar.stdout, capture_output=True, text=True)
    tar.stdout.close()
    if tar.wait() != 0 or imported.returncode != 0:
        sys.exit(f"importing {rootfs}: tar rc {tar.returncode}, podman: {imported.stderr.strip()}")
    print(f"{BASE_IMAGE}: imported from {rootfs}")


def socktrace_image() -> None:
    # --network host: the build's pip fetches socktrace's dependencies
    print(podman("build", "--network", "host", *LIMITS, "--build-arg", f"BASE={BASE_IMAGE}",
                 "-t", SOCKTRACE_IMAGE, "-f", str(TOP / "Containerfile"), str(TOP), timeout=900))


def docker_base_image(rootfs: Path) -> None:
    """The same base image in docker's store (podman save | docker load)."""
    ensure_dockerd()
    have = docker("image", "inspect", "-f", '{{ index .Config.Labels "socktrace.rootfs" }}', BASE_IMAGE,
                  check=False)
    if have == stamp(rootfs):
        print(f"docker {BASE_IMAGE}: up to date")
        return
    save = subprocess.Popen([*PODMAN, "save", BASE_IMAGE], stdout=subprocess.PIPE)
    loaded = subprocess.run([DOCKER, "load"], stdin=save.stdout, capture_output=True, text=True)
    save.stdout.close()
    if save.wait() != 0 or loaded.returncode != 0:
        sys.exit(f"docker load: podman save rc {save.returncode}, docker: {loaded.stderr.strip()}")
    print(f"docker {BASE_IMAGE}: {loaded.stdout.strip()}")


if __name__ == "__main__":
    base_image(Path(sys.argv[1]))
    socktrace_image()
    docker_base_image(Path(sys.argv[1]))
    # what a rebuild left untagged (an older tree: 1.4 GB each)
    podman("image", "prune", "-f")
    docker("image", "prune", "-f")
