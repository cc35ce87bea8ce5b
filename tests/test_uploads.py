"""Files over real HTTP and sockets: uploads, each refusal, who may fetch what, clean images,
attachments in messages, deletion and the sweep of unposted uploads, in the folder store.

The S3 store and nginx's X-Accel-Redirect have their own modules (test_uploads_s3.py, and
test_deploy.py for nginx)."""

import http.client
import io
import json
import socket
import urllib.request
import uuid
from datetime import timedelta

import pytest
from PIL import ExifTags, Image
from sqlalchemy import func, select, update
from websockets.sync.client import connect

from extensions import db
from helpers import ChatClient, Http, login, moved, multipart, scrape_client, token_issued_at
from models import Attachment, Message, utcnow

MARKERS = (b"EXIF-MARKER-7361", b"COMMENT-MARKER-7361", b"XMP-MARKER-7361")


def png(width=64, height=48, color=(200, 30, 30)):
    """The bytes of a PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def photo_with_metadata():
    """A 200x100 JPEG turned by its EXIF (orientation 6: shown 100x200), with a GPS position, a
    description, a comment and XMP, each holding a marker."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.ImageDescription] = MARKERS[0].decode()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 24.0)
    buffer = io.BytesIO()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + MARKERS[2] + b"</x:xmpmeta>"
    Image.new("RGB", (200, 100), (10, 120, 200)).save(
        buffer, "JPEG", exif=exif, comment=MARKERS[1], xmp=xmp
    )
    data = buffer.getvalue()
    assert all(marker in data for marker in MARKERS)  # The test's own premise.
    return data


def animated_gif():
    """A three-frame GIF with a comment."""
    frames = [Image.new("RGB", (40, 30), (n * 80, 40, 200 - n * 60)) for n in range(3)]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0,
        comment=MARKERS[1],
    )  # fmt: skip
    return buffer.getvalue()


def until(chat, kind):
    """The next frame of type ``kind``; any other is skipped."""
    while (frame := chat.recv())["type"] != kind:
        pass
    return frame


def post(chat, attachments, text="", room="general", client_id=None):
    """Send a message with files; the frame that answers it (the message, or an error)."""
    client_id = client_id or uuid.uuid4().hex
    chat.send(
        {"type": "message", "room": room, "text": text, "attachments": attachments,
         "client_id": client_id}
    )  # fmt: skip
    while (frame := chat.recv()).get("client_id") != client_id:
        pass
    return frame


@pytest.fixture
def people(app, make_user, ws_connect, live_server):
    """alice, bob and carol: a socket each, with ``http`` for their requests."""
    found = {}
    for name in ("alice", "bob", "carol"):
        user_id = make_user(f"{name}@example.com")[0]
        chat = ws_connect(user_id)
        chat.id, chat.http = user_id, Http(app, live_server, user_id)
        found[name] = chat
    return found


def stored_files(app):
    """Every file in the upload folder, thumbnails included."""
    root = app.config["CHAT_UPLOAD_DIR"]
    from pathlib import Path

    return sorted(p.name for p in Path(root).rglob("*") if p.is_file())


def test_an_image_is_served_without_its_metadata_turned_upright_with_a_thumbnail(people):
    alice = people["alice"]
    described = alice.http.uploaded(photo_with_metadata(), "holiday.jpg")
    assert described == {
        "id": described["id"],
        "name": "holiday.jpg",
        "size": described["size"],
        "content_type": "image/jpeg",
        "url": f"/files/{described['id']}/holiday.jpg",
        "thumbnail_url": f"/thumbnails/{described['id']}",
        "width": 100,
        "height": 200,
    }
    status, headers, body = alice.http.get(described["url"])
    assert status == 200
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Content-Disposition"].startswith("inline;")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert len(body) == described["size"]
    assert not [marker for marker in MARKERS if marker in body]
    served = Image.open(io.BytesIO(body))
    assert served.size == (100, 200)
    assert dict(served.getexif()) == {}
    assert "xmp" not in served.info
    assert "comment" not in served.info
    status, headers, body = alice.http.get(described["thumbnail_url"])
    assert status == 200
    assert headers["Content-Type"] == "image/webp"
    thumbnail = Image.open(io.BytesIO(body))
    assert thumbnail.format == "WEBP"
    assert thumbnail.size == (100, 200)  # Smaller than the box: never enlarged.


def test_a_large_image_gets_a_thumbnail_within_the_box(people):
    described = people["alice"].http.uploaded(png(1600, 900), "wide.png")
    assert (described["width"], described["height"]) == (1600, 900)
    _, _, body = people["alice"].http.get(described["thumbnail_url"])
    assert Image.open(io.BytesIO(body)).size == (480, 270)


def test_an_animation_stays_animated_and_loses_its_comment(people):
    described = people["alice"].http.uploaded(animated_gif(), "wave.gif")
    assert described["content_type"] == "image/gif"
    status, headers, body = people["alice"].http.get(described["thumbnail_url"])
    assert status == 200
    assert headers["Content-Type"] == "image/gif"
    served = Image.open(io.BytesIO(body))
    assert served.n_frames == 3
    assert MARKERS[1] not in body


def image_bytes(mode, fmt, **options):
    """A 50x40 image of ``mode`` saved as ``fmt``."""
    image = Image.new(mode, (50, 40))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (image_bytes("RGBA", "PNG"), "image/png"),
        (image_bytes("P", "PNG", transparency=0), "image/png"),
        (image_bytes("LA", "PNG"), "image/png"),
        (image_bytes("I;16", "PNG"), "image/png"),
        (image_bytes("L", "JPEG"), "image/jpeg"),
        (image_bytes("CMYK", "JPEG"), "image/jpeg"),
        (image_bytes("RGB", "WEBP"), "image/webp"),
        (image_bytes("RGBA", "WEBP", lossless=True), "image/webp"),
        (image_bytes("P", "GIF"), "image/gif"),
    ],
    ids=["rgba-png", "palette-png", "la-png", "16-bit-png", "grey-jpeg", "cmyk-jpeg", "webp",
         "lossless-webp", "gif"],
)  # fmt: skip
def test_every_kind_of_image_is_served_with_a_thumbnail(people, data, content_type):
    http = people["alice"].http
    described = http.uploaded(data, "picture")
    assert (described["content_type"], described["width"], described["height"]) == (
        content_type, 50, 40,
    )  # fmt: skip
    status, headers, body = http.get(described["url"])
    assert (status, headers["Content-Type"]) == (200, content_type)
    assert Image.open(io.BytesIO(body)).size == (50, 40)
    status, headers, body = http.get(described["thumbnail_url"])
    assert (status, headers["Content-Type"]) == (200, "image/webp")
    assert Image.open(io.BytesIO(body)).size == (50, 40)


@pytest.mark.parametrize(
    ("data", "name", "sniffed"),
    [
        (b"<html><script>alert(document.cookie)</script></html>", "page.html", "text/html"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "a.svg", None),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "report.png", "application/pdf"),
        (b"just some notes\n", "notes.txt", "text/plain"),
    ],
)
def test_any_other_file_is_only_ever_a_download(people, data, name, sniffed):
    alice = people["alice"]
    described = alice.http.uploaded(data, name)
    assert described["thumbnail_url"] is None
    assert (described["width"], described["height"]) == (None, None)
    if sniffed:
        assert described["content_type"] == sniffed  # From the bytes, whatever the name says.
    status, headers, body = alice.http.get(described["url"])
    assert status == 200
    assert body == data
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment;")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert alice.http.get(f"/thumbnails/{described['id']}")[0] == 404


def test_names_are_cleaned(people):
    http = people["alice"].http
    assert http.uploaded(b"x", "../../etc/passwd")["name"] == "passwd"
    assert http.uploaded(b"x", "invoice\u202egpj.exe")["name"] == "invoice gpj.exe"
    assert http.uploaded(b"x", "")["name"] == "file"
    long = http.uploaded(b"x", "a" * 300 + ".txt")["name"]
    assert (len(long), long[-4:]) == (200, ".txt")
    described = http.uploaded(b"x", "été à l'œil.txt")
    status, headers, _ = http.get(described["url"])
    assert status == 200
    assert (
        "filename*=UTF-8''%C3%A9t%C3%A9%20%C3%A0%20l%27%C5%93il.txt"
        in (headers["Content-Disposition"])
    )


@pytest.mark.database
def test_files_in_a_message_reach_the_room_and_only_the_room(people):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    alice.send({"type": "create_room", "name": "design"})
    until(alice, "room")
    bob.send({"type": "join_room", "room": "design"})
    until(bob, "room")
    picture = alice.http.uploaded(png(), "mock.png")
    notes = alice.http.uploaded(b"colour: red\n", "notes.txt")
    # Before it is posted, a file is its uploader's alone.
    for person in (bob, carol):
        assert person.http.get(picture["url"])[0] == 404
    assert alice.http.get(picture["url"])[0] == 200
    sent = post(alice, [notes["id"], picture["id"]], "the mock-up", room="design")
    assert sent["type"] == "message", sent
    assert sent["attachments"] == [notes, picture]  # In the order sent.
    while (seen := bob.recv())["type"] != "message":
        pass
    assert (seen["text"], seen["attachments"]) == ("the mock-up", [notes, picture])
    assert bob.http.get(picture["url"])[:1] == (200,)
    assert bob.http.get(picture["thumbnail_url"])[0] == 200
    # carol is not in the room: to her the file does not exist.
    assert carol.http.get(picture["url"])[0] == 404
    assert carol.http.get(picture["thumbnail_url"])[0] == 404
    # History and search show the message with its files.
    bob.send({"type": "history", "room": "design"})
    page = bob.recv_type("history")
    assert page["messages"][-1]["attachments"] == [notes, picture]


@pytest.mark.database
def test_a_caption_alone_or_files_alone(people):
    alice = people["alice"]
    only_files = post(alice, [alice.http.uploaded(png(), "a.png")["id"]])
    assert (only_files["type"], only_files["text"]) == ("message", "")
    empty = post(alice, [])
    assert (empty["type"], empty["code"]) == ("error", "empty")  # No text, no file.
    alice.send({"type": "message", "text": "   ", "client_id": "blank"})
    assert alice.recv_type("error")["code"] == "empty"


@pytest.mark.database
def test_files_that_cannot_be_attached(app, people):
    alice, bob = people["alice"], people["bob"]
    mine = alice.http.uploaded(b"mine", "mine.txt")["id"]
    theirs = bob.http.uploaded(b"theirs", "theirs.txt")["id"]
    for attachments, code in [
        ([theirs], "not_found"),  # Someone else's upload.
        ([mine, 10**9], "not_found"),  # No such upload.
        ("1", "bad_request"),
        ([mine, mine], "bad_request"),
        ([True], "bad_request"),
        ([0], "bad_request"),
        (list(range(1, 12)), "bad_request"),  # More than CHAT_MAX_ATTACHMENTS.
    ]:
        refused = post(alice, attachments, "hello")
        assert (refused["type"], refused["code"]) == ("error", code), attachments
    with app.app_context():
        assert db.session.scalar(select(func.count(Message.id))) == 0  # Nothing was stored.
    assert post(alice, [mine], "first")["type"] == "message"
    # Posted once, a file cannot be posted again.
    again = post(alice, [mine], "second")
    assert (again["type"], again["code"]) == ("error", "not_found")


@pytest.mark.database
def test_a_retried_post_gets_its_original(people):
    alice = people["alice"]
    upload = alice.http.uploaded(png(), "a.png")
    first = post(alice, [upload["id"]], "once", client_id="retry-1")
    again = post(alice, [upload["id"]], "once", client_id="retry-1")
    assert again == first


@pytest.mark.database
def test_deleting_a_message_deletes_its_files(app, people):
    alice, bob = people["alice"], people["bob"]
    upload = alice.http.uploaded(png(), "gone.png")
    kept = alice.http.uploaded(b"kept", "kept.txt")
    sent = post(alice, [upload["id"]], "soon gone")
    post(alice, [kept["id"]], "stays")
    assert len(stored_files(app)) == 3  # The image, its thumbnail, the text file.
    alice.send({"type": "delete", "id": sent["id"], "client_id": "del"})
    while (changed := alice.recv())["type"] != "message_changed":
        pass
    assert changed["message"]["attachments"] == []
    for path in (upload["url"], upload["thumbnail_url"]):
        assert alice.http.get(path)[0] == 404
        assert bob.http.get(path)[0] == 404
    assert len(stored_files(app)) == 1
    assert bob.http.get(kept["url"])[0] == 200
    with app.app_context():
        names = select(Message.attachment_names).where(Message.id == sent["id"])
        assert db.session.scalar(names) is None  # Out of the search index too.


@pytest.mark.database
def test_uploads_never_posted_are_removed_after_a_day(app, people, runner):
    alice = people["alice"]
    old = alice.http.uploaded(b"old", "old.txt")
    posted = alice.http.uploaded(b"posted", "posted.txt")
    post(alice, [posted["id"]], "kept")
    with app.app_context():
        a_day_ago = utcnow() - timedelta(seconds=app.config["CHAT_UPLOAD_TTL"] + 1)
        db.session.execute(update(Attachment).values(created_at=a_day_ago))
        db.session.commit()
    fresh = alice.http.uploaded(b"fresh", "fresh.txt")  # Each upload sweeps old ones.
    assert alice.http.get(old["url"])[0] == 404
    assert alice.http.get(posted["url"])[0] == 200
    assert alice.http.get(fresh["url"])[0] == 200
    assert len(stored_files(app)) == 2
    # The command does the same, for a cron job.
    with app.app_context():
        db.session.execute(update(Attachment).values(created_at=a_day_ago))
        db.session.commit()
    result = runner.invoke(args=["purge-uploads"])
    assert result.output.strip() == "Removed 1 unposted uploads."
    assert alice.http.get(fresh["url"])[0] == 404
    assert alice.http.get(posted["url"])[0] == 200


@pytest.mark.database
def test_attachment_names_are_searchable(people):
    alice, bob = people["alice"], people["bob"]
    report = alice.http.uploaded(b"%PDF-1.4\n", "Quarterly-Réport.pdf")
    sent = post(alice, [report["id"]], "as promised")
    status, _, body = bob.http.get("/api/search?q=quarterly+report")
    assert status == 200
    (found,) = json.loads(body)["results"]
    assert found["message"]["id"] == sent["id"]
    assert found["message"]["attachments"] == [report]
    # The snippet shows the name that matched, after the text.
    assert found["snippet"] == "as promised · 📎 <mark>Quarterly</mark>-<mark>Réport</mark>.pdf"
    alone = post(alice, [alice.http.uploaded(b"%PDF-1.4\n", "minutes.pdf")["id"]], "")
    _, _, body = bob.http.get("/api/search?q=minutes")
    (found,) = json.loads(body)["results"]
    assert (found["message"]["id"], found["snippet"]) == (
        alone["id"],
        "📎 <mark>minutes</mark>.pdf",
    )
    alice.send({"type": "delete", "id": sent["id"]})
    alice.recv_type("message_changed")
    _, _, body = bob.http.get("/api/search?q=quarterly")
    assert json.loads(body)["results"] == []


# ---- Refusals --------------------------------------------------------------------------------


@pytest.fixture
def small_limits(app_config):
    """A 64 KiB file limit and a 100 KiB quota, to test them cheaply."""
    app_config["CHAT_MAX_UPLOAD_BYTES"] = 64 * 1024
    app_config["CHAT_UPLOAD_QUOTA_BYTES"] = 100 * 1024
    app_config["CHAT_MAX_IMAGE_PIXELS"] = 1_000_000
    return app_config


def test_each_refusal_is_a_clear_json_error(small_limits, app, people):
    http = people["alice"].http
    truncated = png(300, 300)[:200]
    cases = [
        (http.upload(b"", "empty.txt"), 400, "empty_file"),
        (http.upload(b"", fields={"other": ("a.txt", b"x")}), 400, "no_file"),
        (http.upload(b"", fields={"file": "not a file"}), 400, "no_file"),
        (http.upload(b"x", headers={}), 401, "unauthenticated"),
        (http.upload(b"x", headers={"Authorization": "Bearer forged"}), 401, "unauthenticated"),
        (http.upload(b"x", headers={"Authorization": "Basic YTpi"}), 401, "unauthenticated"),
        (http.upload(b"x" * (64 * 1024 + 1), "big.bin"), 413, "too_large"),
        (http.upload(png(1001, 1000), "huge.png"), 413, "image_too_large"),
        (http.upload(truncated, "broken.png"), 400, "bad_image"),
    ]
    for (status, body), want_status, code in cases:
        assert (status, body["error"]) == (want_status, code), body
        assert body["message"]
    assert http.upload(b"x" * (64 * 1024 + 1))[1]["message"] == "A file may be at most 64 KiB."
    with app.app_context():
        assert db.session.scalar(select(func.count(Attachment.id))) == 0
    assert stored_files(app) == []


@pytest.fixture
def two_a_minute(app_config):
    app_config["CHAT_UPLOAD_LIMIT"] = "2 per minute"


def test_uploads_are_rate_limited_per_person(two_a_minute, people):
    alice, bob = people["alice"].http, people["bob"].http
    assert [alice.upload(b"x", "a.txt")[0] for _ in range(2)] == [201, 201]
    status, body = alice.upload(b"x", "a.txt")
    assert (status, body["error"]) == (429, "rate_limited")
    assert bob.upload(b"x", "b.txt")[0] == 201


def test_a_decompression_bomb_is_refused_unopened(small_limits, people):
    # A PNG of a few kilobytes announcing 5000x5000 pixels (25 times the limit; at the
    # default limit, the same at 50 GB of pixels). The header alone refuses it.
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, "PNG", optimize=True)
    assert len(bomb.getvalue()) < 64 * 1024
    status, body = people["alice"].http.upload(bomb.getvalue(), "bomb.png")
    assert (status, body["error"]) == (413, "image_too_large")
    assert body["message"] == "An image may have at most 1 megapixels."


def test_the_quota_counts_every_file_kept(small_limits, app, people):
    http = people["alice"].http
    http.uploaded(b"x" * 60 * 1024, "one.bin")
    status, body = http.upload(b"x" * 50 * 1024, "two.bin")
    assert (status, body["error"]) == (413, "quota_exceeded")
    assert people["bob"].http.upload(b"x" * 50 * 1024, "his.bin")[0] == 201  # Per person.


def test_a_size_announced_too_large_is_refused_before_the_body(
    small_limits, live_server, app, alice
):
    # Headers announcing 100 MiB, and no body at all: the answer comes anyway.
    user_id = alice
    host, port = live_server.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            (
                "POST /api/uploads HTTP/1.1\r\n"
                f"Host: {live_server}\r\n"
                f"Authorization: Bearer {token_issued_at(app, user_id)}\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n"
                f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
            ).encode()
        )
        answer = raw.makefile("rb").read()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"] == "too_large"


# Werkzeug's multipart parser, cut off at the limit, leaves the file it was spooling to for the
# garbage collector to close (a ResourceWarning, nothing kept): not ours to mend.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_body_without_a_length_is_cut_at_the_limit(small_limits, people):
    alice = people["alice"].http
    body, content_type = multipart({"file": ("big.bin", b"x" * 200 * 1024)})
    chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
    host, port = alice.server.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(
            "POST", "/api/uploads", body=chunks, encode_chunked=True,
            headers={"Content-Type": content_type, "Transfer-Encoding": "chunked",
                     **alice.headers()},
        )  # fmt: skip
        response = connection.getresponse()
        status, answer = response.status, json.loads(response.read())
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server closed the connection without an answer")
    finally:
        connection.close()
    assert (status, answer["error"]) == (413, "too_large")


def test_uploads_by_session_need_the_csrf_token(app, client, make_user):
    make_user("alice@example.com")
    login(client)
    page = client.get("/")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    files = {"file": (io.BytesIO(png()), "a.png")}
    refused = client.post("/api/uploads", data=files, content_type="multipart/form-data")
    assert (refused.status_code, refused.get_json()["error"]) == (400, "csrf_failed")
    files = {"file": (io.BytesIO(png()), "a.png")}
    accepted = client.post(
        "/api/uploads", data=files, content_type="multipart/form-data",
        headers={"X-CSRFToken": token},
    )  # fmt: skip
    assert accepted.status_code == 201, accepted.get_json()
    fetched = client.get(accepted.get_json()["url"])
    fetched.close()
    assert fetched.status_code == 200


def test_fetching_needs_a_session_or_a_token(people):
    alice = people["alice"]
    described = alice.http.uploaded(b"secret", "secret.txt")
    status, _, body = alice.http.get(described["url"], headers={})
    assert (status, json.loads(body)["error"]) == (401, "unauthenticated")
    status, _, body = alice.http.get(f"/files/{described['id'] + 1}/x")
    assert (status, json.loads(body)["error"]) == (404, "not_found")


# ---- The S3 store ------------------------------------------------------------------------------


@pytest.fixture
def s3_config(app_config, s3_server, s3_bucket):
    """The app on a bucket of moto's S3 server, streaming files; yields the boto3 client."""
    client, bucket = s3_bucket
    app_config.update(CHAT_S3_BUCKET=bucket, CHAT_S3_ENDPOINT_URL=s3_server, CHAT_S3_PREFIX="test/")
    return client, bucket


def bucket_keys(s3):
    client, bucket = s3
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_s3_keeps_and_streams_files_with_the_same_checks(s3_config, app, people):
    alice, bob = people["alice"], people["bob"]
    described = alice.http.uploaded(photo_with_metadata(), "holiday.jpg")
    notes = alice.http.uploaded(b"<b>notes</b>", "notes.html")
    keys = bucket_keys(s3_config)
    assert len(keys) == 3  # The photo, its thumbnail, the notes.
    assert all(key.startswith("test/") for key in keys)
    assert stored_files(app) == []  # Nothing in the folder.
    assert bob.http.get(described["url"])[0] == 404  # Not posted yet.
    post(alice, [described["id"], notes["id"]], "from the trip")
    status, headers, body = bob.http.get(described["url"])
    assert (status, headers["Content-Type"], len(body)) == (200, "image/jpeg", described["size"])
    assert not [marker for marker in MARKERS if marker in body]
    assert headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    status, headers, body = bob.http.get(notes["url"])
    assert (status, body) == (200, b"<b>notes</b>")
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment;")


@pytest.fixture
def presigned(s3_config, app_config):
    """The S3 store answering with redirects to presigned URLs."""
    app_config["CHAT_S3_PRESIGN_TTL"] = 60
    return s3_config


def test_s3_presigned_redirects_only_for_who_may_read(presigned, app, people):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    # The page may show images from the store.
    endpoint = app.config["CHAT_S3_ENDPOINT_URL"]
    policy = alice.http.get("/login")[1]["Content-Security-Policy"]
    assert f"img-src 'self' data: {endpoint};" in policy
    alice.send({"type": "open_dm", "user_id": bob.id})
    dm = until(alice, "room")["room"]
    notes = alice.http.uploaded(b"just between us", "secret.txt")
    post(alice, [notes["id"]], "", room=dm)
    status, headers, _ = bob.http.get(notes["url"])
    assert status == 302
    assert headers["Cache-Control"] == "no-store"
    location = headers["Location"]
    assert location.startswith(app.config["CHAT_S3_ENDPOINT_URL"])
    fetched = urllib.request.urlopen(location, timeout=5)  # noqa: S310 - moto on loopback
    with fetched:
        assert fetched.read() == b"just between us"
        assert fetched.headers["Content-Disposition"].startswith("attachment;")
        assert fetched.headers["Content-Type"] == "application/octet-stream"
    assert carol.http.get(notes["url"])[0] == 404  # No address for her.


def test_s3_deletes_with_the_message_and_the_sweep(s3_config, app, people):
    alice = people["alice"]
    sent = post(alice, [alice.http.uploaded(png(), "a.png")["id"]], "soon gone")
    left = alice.http.uploaded(b"never posted", "left.txt")
    assert len(bucket_keys(s3_config)) == 3
    alice.send({"type": "delete", "id": sent["id"]})
    alice.recv_type("message_changed")
    assert len(bucket_keys(s3_config)) == 1
    with app.app_context():
        a_day_ago = utcnow() - timedelta(seconds=app.config["CHAT_UPLOAD_TTL"] + 1)
        db.session.execute(update(Attachment).values(created_at=a_day_ago))
        db.session.commit()
    alice.http.uploaded(b"fresh", "fresh.txt")
    assert alice.http.get(left["url"])[0] == 404
    assert len(bucket_keys(s3_config)) == 1  # The fresh one only.


def test_an_s3_store_that_fails_keeps_nothing(s3_config, app, people):
    client, bucket = s3_config
    client.delete_bucket(Bucket=bucket)
    status, body = people["alice"].http.upload(png(), "a.png")
    assert (status, body["error"]) == (503, "unavailable")
    with app.app_context():
        assert db.session.scalar(select(func.count(Attachment.id))) == 0
    client.create_bucket(Bucket=bucket)  # For the fixture's teardown.


# ---- Metrics -----------------------------------------------------------------------------------


@pytest.fixture
def metrics_on(app_config):
    app_config["CHAT_METRICS"] = True


def test_uploads_are_counted(metrics_on, small_limits, app, people):
    client, http = app.test_client(), people["alice"].http
    before = scrape_client(client)
    picture = http.uploaded(png(), "a.png")
    notes = http.uploaded(b"notes", "a.txt")
    assert http.upload(b"x" * (64 * 1024 + 1), "big.bin")[0] == 413
    with app.app_context():
        a_day_ago = utcnow() - timedelta(seconds=app.config["CHAT_UPLOAD_TTL"] + 1)
        db.session.execute(update(Attachment).values(created_at=a_day_ago))
        db.session.commit()
    http.uploaded(b"fresh", "fresh.txt")
    after = scrape_client(client)
    assert moved(before, after, "chat_uploads_total", status="201") == 3
    assert moved(before, after, "chat_uploads_total", status="413") == 1
    assert moved(before, after, "chat_upload_bytes_total", kind="image") == picture["size"]
    assert moved(before, after, "chat_upload_bytes_total", kind="file") == notes["size"] + 5
    assert moved(before, after, "chat_uploads_purged_total") == 2


# ---- Several instances -------------------------------------------------------------------------


@pytest.mark.database
def test_two_instances_joined_by_redis_share_files_and_limits(
    app, make_user, scaled_config, s3_server, s3_bucket, start_servers
):
    """Two gunicorns, one database, one Redis, one bucket: a file uploaded to one is posted
    through the other and fetched from either; the upload limit counts across both."""
    _client, bucket = s3_bucket
    scaled_config.update(
        CHAT_S3_BUCKET=bucket, CHAT_S3_ENDPOINT_URL=s3_server, CHAT_UPLOAD_LIMIT="3 per minute"
    )  # The bucket's credentials are in the environment, which gunicorn inherits.
    first, second = start_servers(scaled_config, instances=2, workers=1)
    alice, bob = make_user("alice@example.com")[0], make_user("bob@example.com")[0]
    on_first = Http(app, f"127.0.0.1:{first.port}", alice)
    on_second = Http(app, f"127.0.0.1:{second.port}", alice)
    picture = on_first.uploaded(png(), "shared.png")
    url = "ws://127.0.0.1:{}/ws?token={}"
    with (
        connect(url.format(second.port, token_issued_at(app, alice)), open_timeout=5) as one,
        connect(url.format(first.port, token_issued_at(app, bob)), open_timeout=5) as two,
    ):
        poster, reader = ChatClient(one), ChatClient(two)
        poster.recv_type("hello")
        reader.recv_type("hello")
        sent = post(poster, [picture["id"]], "from the other host")
        assert sent["attachments"] == [picture]
        seen = until(reader, "message")
        assert seen["attachments"] == [picture]
    status, _, body = Http(app, f"127.0.0.1:{second.port}", bob).get(picture["url"])
    assert status == 200
    assert Image.open(io.BytesIO(body)).size == (64, 48)
    # Three a minute in all: two more, one on each host, then the fourth is refused.
    assert on_second.upload(b"x", "b.txt")[0] == 201
    assert on_first.upload(b"x", "c.txt")[0] == 201
    status, body = on_second.upload(b"x", "d.txt")
    assert (status, body["error"]) == (429, "rate_limited")
