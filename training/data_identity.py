"""The data's one identity, by content: a folder's fingerprint (each file's relative path, size and SHA-256)
or a TFDS dataset's name, version and checksums, computed once as data.py loads it (docs/training.md)."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf

_CHUNK = 1 << 20


def _relative(path: str, root: str) -> str:
    root = root.rstrip("/")
    relative = path[len(root) + 1:] if path.startswith(root + "/") else os.path.relpath(path, root)
    return relative.replace(os.sep, "/")


def file_digest(path: str) -> tuple[str, int]:
    """(SHA-256 hex, size in bytes) of a file's content, read through tf.io.gfile."""
    digest = hashlib.sha256()
    size = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def folder_identity(data_dir: str, class_names: list[str], files: list[tuple[str, int]]) -> dict:
    """The fingerprint of every file of the folder's listing (training/data.py list_image_folder)."""
    listing = sorted((_relative(path, data_dir), path) for path, _ in files)
    fingerprint = hashlib.sha256()
    total = 0
    with ThreadPoolExecutor(max_workers=8) as pool:  # reading dominates, and hashlib releases the GIL
        for (relative, _), (content, size) in zip(listing, pool.map(file_digest, [path for _, path in listing])):
            fingerprint.update(f"{relative}\t{size}\t{content}\n".encode())
            total += size
    return {"kind": "folder", "classes": list(class_names), "files": len(files), "bytes": total,
            "fingerprint": "sha256:" + fingerprint.hexdigest()}


def tfds_identity(info) -> dict:
    """A TFDS builder's `info`: name, version and, when recorded, a digest of its download checksums."""
    identity = {"kind": "tfds", "name": info.name, "version": str(info.version),
                "fingerprint": f"tfds:{info.full_name}"}
    checksums = getattr(info, "download_checksums", None) or {}
    if checksums:
        lines = "".join(f"{url}\t{checksum}\n" for url, checksum in sorted(checksums.items()))
        identity["checksums"] = "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    return identity
