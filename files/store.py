"""Where the bytes of uploads live: a folder (the default) or S3-compatible object storage.

Both hold immutable objects under random keys and answer a permitted request the same way: the
caller has already checked who may read it and decided the headers (``api/files.py``). The folder
is served by the app, or by nginx when ``CHAT_UPLOAD_ACCEL`` names its internal location
(``X-Accel-Redirect``); object storage is streamed through the app, or, with
``CHAT_S3_PRESIGN_TTL``, answered with a redirect to a URL that is valid that many seconds.
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, send_file

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
EXTENSION_KEY = "chat.files.store"


class StoreError(Exception):
    """The store refused or could not be reached: nothing was kept (HTTP 503)."""


class Store(Protocol):
    """What the app needs of a place to keep files."""

    def put(self, key: str, source: Path, content_type: str) -> None:
        """Keep a copy of ``source`` under ``key``; ``StoreError`` if it could not."""

    def delete(self, keys: Iterable[str]) -> None:
        """Remove ``keys`` (those already gone are no error); failures are logged, not raised."""

    def respond(self, key: str, content_type: str, headers: Mapping[str, str]) -> Response:
        """The response that sends the object ``key`` with ``headers``."""


class FolderStore:
    """Files in a folder (``instance/uploads/`` by default), one per key."""

    def __init__(self, root: Path, accel: str = "") -> None:
        self.root = root
        self.accel = accel  # nginx's internal location for ``root``, or "" to send files here.

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, source: Path, content_type: str) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Copied aside, then renamed: a reader never sees half a file.
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
            with os.fdopen(fd, "wb") as out, source.open("rb") as data:
                shutil.copyfileobj(data, out, CHUNK)
            # Readable by the folder's group too: nginx's, when it sends files (setgid folder).
            os.chmod(temporary, 0o640)
            os.replace(temporary, target)
        except OSError as error:
            raise StoreError(str(error)) from error

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            try:
                self._path(key).unlink(missing_ok=True)
            except OSError:
                log.exception("could not remove an upload from the folder")

    def respond(self, key: str, content_type: str, headers: Mapping[str, str]) -> Response:
        if self.accel:
            # nginx sends the bytes; it keeps Content-Disposition and Cache-Control from here,
            # and its internal location adds the security headers (deploy/nginx-chat.conf).
            response = Response(status=200, content_type=content_type)
            response.headers["X-Accel-Redirect"] = f"{self.accel}{key}"
        else:
            response = send_file(self._path(key), mimetype=content_type, conditional=True)
        response.headers.update(headers)
        return response


class S3Store:
    """Objects in an S3-compatible bucket (AWS, MinIO, Ceph, moto's server in the tests)."""

    def __init__(self, bucket: str, prefix: str, presign_ttl: int, client: "S3Client") -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.presign_ttl = presign_ttl
        self.client = client  # boto3 clients are safe to share between threads.

    def put(self, key: str, source: Path, content_type: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # One PUT (a file is at most CHAT_MAX_UPLOAD_BYTES): no transfer threads.
            with source.open("rb") as body:
                self.client.put_object(
                    Bucket=self.bucket, Key=self.prefix + key, Body=body, ContentType=content_type
                )
        except (BotoCoreError, ClientError, OSError) as error:
            raise StoreError(str(error)) from error

    def delete(self, keys: Iterable[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        objects: list[ObjectIdentifierTypeDef] = [{"Key": self.prefix + key} for key in keys]
        for start in range(0, len(objects), 1000):  # S3's limit per request.
            try:
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects[start : start + 1000]}
                )
            except (BotoCoreError, ClientError):
                log.exception("could not remove uploads from the bucket")

    def respond(self, key: str, content_type: str, headers: Mapping[str, str]) -> Response:
        from botocore.exceptions import BotoCoreError, ClientError

        if self.presign_ttl:
            url = self.client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self.prefix + key,
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": headers["Content-Disposition"],
                    "ResponseCacheControl": headers["Cache-Control"],
                },
                ExpiresIn=self.presign_ttl,
            )
            # The URL expires: the redirect itself must not be kept.
            return Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except (BotoCoreError, ClientError) as error:
            raise StoreError(str(error)) from error
        body = found["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        response = Response(chunks(), content_type=content_type, direct_passthrough=True)
        response.content_length = found["ContentLength"]
        response.headers.update(headers)
        return response


def _s3_client(app: Flask) -> "S3Client":
    import boto3
    from botocore.config import Config as BotoConfig

    config = app.config
    return boto3.client(
        "s3",
        endpoint_url=config["CHAT_S3_ENDPOINT_URL"] or None,
        region_name=config["CHAT_S3_REGION"],
        # Bounded waits: a store that hangs must not hold a thread for minutes.
        config=BotoConfig(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}),
    )


def image_origin(config: Mapping[str, object]) -> str:
    """Where the page's images come from besides the app: the store's origin when the app
    redirects to presigned URLs, else nothing."""
    if not (config["CHAT_S3_BUCKET"] and config["CHAT_S3_PRESIGN_TTL"]):
        return ""
    endpoint = str(config["CHAT_S3_ENDPOINT_URL"] or "")
    if endpoint:
        parts = urlsplit(endpoint)
        return f"{parts.scheme}://{parts.netloc}"
    bucket, region = config["CHAT_S3_BUCKET"], config["CHAT_S3_REGION"]
    return f"https://{bucket}.s3.amazonaws.com https://{bucket}.s3.{region}.amazonaws.com"


def init_app(app: Flask) -> None:
    """Choose the store from the settings."""
    config = app.config
    store: Store
    if config["CHAT_S3_BUCKET"]:
        store = S3Store(
            config["CHAT_S3_BUCKET"],
            config["CHAT_S3_PREFIX"],
            config["CHAT_S3_PRESIGN_TTL"],
            _s3_client(app),
        )
    else:
        store = FolderStore(Path(config["CHAT_UPLOAD_DIR"]), config["CHAT_UPLOAD_ACCEL"])
    app.extensions[EXTENSION_KEY] = store


def store() -> Store:
    """The current app's store."""
    found: Store = current_app.extensions[EXTENSION_KEY]
    return found
