"""Avatars over real HTTP and sockets: the picture made a clean 256-pixel square, each refusal,
the old file gone from the store, CSRF, who may fetch it, and the address in message objects
(live, across a rename and a new picture without reconnecting, and in history).

The profile page in a browser is in test_avatars_page.py."""

import io
import json
import re
import socket
from pathlib import Path

import pytest
from PIL import ExifTags, Image
from sqlalchemy import select

from extensions import db
from helpers import Http, csrf_token, login, submit_form
from models import Message, User, describe
from test_uploads import bucket_keys

MARKERS = (b"EXIF-MARKER-2048", b"COMMENT-MARKER-2048", b"XMP-MARKER-2048")
RED, BLUE, GREEN = (220, 20, 20), (20, 40, 220), (20, 200, 40)
AVATAR_URL = re.compile(r"/avatars/(\d+)/([0-9a-f]{16})\.webp")
JSON = {"Accept": "application/json"}


# ---- Pictures ---------------------------------------------------------------------------------


def two_colour_photo():
    """A 300x200 JPEG, its left half red and its right half blue, turned by its EXIF
    (orientation 6: shown 200x300, red on top), with a GPS position, a comment and XMP."""
    image = Image.new("RGB", (300, 200), BLUE)
    image.paste(RED, (0, 0, 150, 200))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.ImageDescription] = MARKERS[0].decode()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 24.0)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + MARKERS[2] + b"</x:xmpmeta>"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif, comment=MARKERS[1], xmp=xmp)
    data = buffer.getvalue()
    assert all(marker in data for marker in MARKERS)  # The test's own premise.
    return data


def png(width=64, height=64, color=GREEN):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def animated_gif():
    """Three frames: green, red, blue."""
    frames = [Image.new("RGB", (40, 30), color) for color in (GREEN, RED, BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buffer.getvalue()


def bomb():
    """A PNG of a few kilobytes announcing 5000x5000 pixels."""
    buffer = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def close_to(pixel, color, tolerance=40):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], color, strict=True))


# ---- Helpers ----------------------------------------------------------------------------------


@pytest.fixture
def app_config(app_config):
    """A 64 KiB picture and a megapixel at most, to test the limits cheaply."""
    app_config["CHAT_MAX_AVATAR_BYTES"] = 64 * 1024
    app_config["CHAT_MAX_IMAGE_PIXELS"] = 1_000_000
    return app_config


def signed_in(client, email="alice@example.com"):
    """Log ``client`` in; the CSRF token of its profile page."""
    login(client, email)
    return csrf_token(client.get("/profile"))


def send_avatar(client, data, token, name="me.jpg", json_answer=True, field="avatar"):
    """POST /profile/avatar as the profile page's form does (with its CSRF token)."""
    form = {field: (io.BytesIO(data), name)}
    if token is not None:
        form["csrf_token"] = token
    headers = JSON if json_answer else {}
    return client.post("/profile/avatar", data=form, headers=headers)


def uploaded(client, data, token):
    """The address of a picture that must be accepted."""
    response = send_avatar(client, data, token)
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    url = response.get_json()["avatar_url"]
    assert AVATAR_URL.fullmatch(url), url
    return url


def stored(app):
    """Every avatar file in the store's folder, as keys."""
    root = Path(app.config["CHAT_UPLOAD_DIR"])
    return sorted(str(p.relative_to(root)) for p in (root / "avatars").rglob("*") if p.is_file())


def key_of(app, user_id):
    with app.app_context():
        return db.session.scalar(select(User.avatar).where(User.id == user_id))


def served(client, url):
    """The picture at ``url``, decoded, with the response."""
    response = client.get(url)
    assert response.status_code == 200, response.data[:200]
    body = response.get_data()
    response.close()
    return Image.open(io.BytesIO(body)), response, body


# ---- The picture ------------------------------------------------------------------------------


def test_a_photo_becomes_an_upright_centre_square_of_256_pixels_without_metadata(
    app, client, alice
):
    url = uploaded(client, two_colour_photo(), signed_in(client))
    assert AVATAR_URL.fullmatch(url).group(1) == str(alice)
    assert stored(app) == [url.removeprefix("/")]
    assert key_of(app, alice) == url.removeprefix("/")
    picture, response, body = served(client, url)
    assert response.headers["Content-Type"] == "image/webp"
    assert response.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert response.headers["Content-Disposition"].startswith("inline;")
    assert (picture.format, picture.size, picture.mode) == ("WEBP", (256, 256), "RGB")
    # Nothing of the file but its pixels: no EXIF (GPS, orientation), XMP, comment or profile.
    assert not [marker for marker in MARKERS if marker in body]
    assert dict(picture.getexif()) == {}
    assert not {"exif", "xmp", "comment", "icc_profile"} & set(picture.info)
    # Shown 200x300 with red on top, its centre square is rows 50-250: red above the middle
    # and blue below it (a crop from the top would be red down to row 192 of 256).
    pixels = picture.convert("RGB")
    for x in (10, 128, 245):
        assert close_to(pixels.getpixel((x, 10)), RED)
        assert close_to(pixels.getpixel((x, 110)), RED)
        assert close_to(pixels.getpixel((x, 150)), BLUE)
        assert close_to(pixels.getpixel((x, 245)), BLUE)


def test_an_animation_is_taken_as_its_first_frame(app, client, alice):
    url = uploaded(client, animated_gif(), signed_in(client))
    picture, _, _ = served(client, url)
    assert getattr(picture, "n_frames", 1) == 1
    assert close_to(picture.convert("RGB").getpixel((128, 128)), GREEN)


@pytest.mark.database
def test_the_old_file_leaves_the_store_when_replaced_and_when_removed(app, client, alice):
    token = signed_in(client)
    first = uploaded(client, png(color=GREEN), token)
    assert uploaded(client, png(color=GREEN), token) == first  # The same picture: one key.
    assert stored(app) == [first.removeprefix("/")]
    second = uploaded(client, png(color=RED), token)
    assert second != first
    assert stored(app) == [second.removeprefix("/")]
    assert client.get(first).status_code == 404  # Gone, and its address too.
    # Removed, from the form (no script): back to the profile with a flash.
    response = client.post("/profile/avatar/delete", data={"csrf_token": token})
    assert (response.status_code, response.headers["Location"]) == (303, "/profile")
    assert "Your picture was removed" in client.get("/profile").text
    assert stored(app) == []
    assert key_of(app, alice) is None
    assert client.get(second).status_code == 404


def test_a_form_post_answers_with_the_profile_and_a_flash(app, client, alice):
    token = signed_in(client)
    response = send_avatar(client, png(), token, json_answer=False)
    assert (response.status_code, response.headers["Location"]) == (303, "/profile")
    page = client.get("/profile").text
    assert "Your picture was saved." in page
    assert f'src="/{key_of(app, alice)}"' in page
    response = send_avatar(client, b"just text", token, name="notes.txt", json_answer=False)
    assert response.status_code == 303
    assert "This file is not a picture" in client.get("/profile").text


# ---- Refusals ---------------------------------------------------------------------------------


def test_each_refusal_is_precise_and_keeps_nothing(app, client, alice):
    token = signed_in(client)
    cases = [
        (send_avatar(client, b"just some text", token, "notes.txt"), 400, "not_an_image",
         "This file is not a picture: choose a JPEG, PNG, GIF or WebP image."),
        (send_avatar(client, b"<svg xmlns='http://www.w3.org/2000/svg'/>", token, "a.svg"), 400,
         "not_an_image", None),
        (send_avatar(client, png(300, 300)[:200], token, "broken.png"), 400, "bad_image",
         "This picture could not be read: it may be damaged."),
        (send_avatar(client, b"x" * (64 * 1024 + 1), token, "big.jpg"), 413, "too_large",
         "A picture may be at most 64 KiB."),
        (send_avatar(client, png(1001, 1000), token, "huge.png"), 413, "image_too_large",
         "A picture may have at most 1 megapixels."),
        (send_avatar(client, bomb(), token, "bomb.png"), 413, "image_too_large", None),
        (send_avatar(client, b"", token, "empty.png"), 400, "empty_file", "The file is empty."),
        (send_avatar(client, png(), token, field="file"), 400, "no_file",
         "Choose a picture to upload."),
    ]  # fmt: skip
    assert len(bomb()) < 64 * 1024  # Small as a file: its header alone refuses it.
    for response, status, code, message in cases:
        body = response.get_json()
        assert (response.status_code, body["error"]) == (status, code), body
        assert body["message"] == message if message else body["message"]
    assert stored(app) == []
    assert key_of(app, alice) is None


def test_a_size_announced_too_large_is_refused_before_the_body(app, live_server, alice):
    # Headers announcing 100 MiB and no body: the answer comes at once, the connection closes.
    client = app.test_client()
    token = signed_in(client)
    cookie = client.get_cookie("session").value
    host, port = live_server.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            (
                "POST /profile/avatar HTTP/1.1\r\n"
                f"Host: {live_server}\r\n"
                f"Cookie: session={cookie}\r\n"
                f"X-CSRFToken: {token}\r\n"
                "Accept: application/json\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n"
                f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
            ).encode()
        )
        answer = raw.makefile("rb").read()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"] == "too_large"


def test_uploading_and_removing_need_the_csrf_token(app, client, alice):
    token = signed_in(client)
    refused = send_avatar(client, png(), None)
    assert (refused.status_code, refused.get_json()["error"]) == (400, "csrf_failed")
    assert stored(app) == []
    url = uploaded(client, png(), token)
    refused = client.post("/profile/avatar/delete", headers=JSON)
    assert (refused.status_code, refused.get_json()["error"]) == (400, "csrf_failed")
    assert key_of(app, alice) == url.removeprefix("/")
    # The header works as well as the field (the page's scripts send it so).
    removed = client.post("/profile/avatar/delete", headers={**JSON, "X-CSRFToken": token})
    assert (removed.status_code, removed.get_json()) == (200, {"avatar_url": None})


def test_signed_out_nothing_is_uploaded_or_served(app, client, make_user, live_server):
    alice = make_user("alice@example.com")[0]
    make_user("bob@example.com")
    url = uploaded(client, png(), signed_in(client))
    stranger = app.test_client()
    response = stranger.get(url)
    assert (response.status_code, response.get_json()["error"]) == (401, "unauthenticated")
    response = stranger.post("/profile/avatar", headers=JSON)
    assert (response.status_code, response.get_json()["error"]) == (401, "unauthenticated")
    response = stranger.post("/profile/avatar")  # A form: to the login page.
    assert (response.status_code, response.headers["Location"][:6]) == (302, "/login")
    # Anyone signed in sees it, by the session or by a socket token.
    bob = app.test_client()
    signed_in(bob, "bob@example.com")
    assert served(bob, url)[0].size == (256, 256)
    http = Http(app, live_server, alice)
    status, headers, _ = http.get(url)
    assert (status, headers["Content-Type"]) == (200, "image/webp")
    # Only the current picture's address answers.
    for other in (f"/avatars/{alice}/{'0' * 16}.webp", f"/avatars/{alice}/..%2Fsecret_key"):
        response = bob.get(other)
        assert response.status_code == 404, other


# ---- In messages ------------------------------------------------------------------------------


def until(chat, kind):
    """The next frame of type ``kind``; presence and others are skipped."""
    while (frame := chat.recv())["type"] != kind:
        pass
    return frame


def said(chat, text):
    """The next message frame with ``text`` (earlier ones are skipped)."""
    while (frame := until(chat, "message"))["text"] != text:
        pass
    return frame


@pytest.mark.database
def test_open_sockets_carry_each_new_picture_in_the_next_message(
    app, client, ws_connect, alice, bob
):
    a, b = ws_connect(alice), ws_connect(bob)
    assert a.hello["user"] == {"id": alice, "name": "alice", "avatar_url": None}
    a.await_presence(online=[bob])
    a.send("before")
    assert said(b, "before")["avatar_url"] is None
    token = signed_in(client)
    first = uploaded(client, png(color=GREEN), token)
    a.send("with a picture")
    for chat in (a, b):
        assert said(chat, "with a picture")["avatar_url"] == first
    # A rename and another picture, neither reconnecting: the next message has both.
    submit_form(client, "/profile", {"display_name": "Queen Alice", "locale": ""})
    second = uploaded(client, png(color=RED), token)
    a.send("renamed")
    frame = said(b, "renamed")
    assert (frame["user"], frame["avatar_url"]) == ("Queen Alice", second)
    client.post("/profile/avatar/delete", headers={**JSON, "X-CSRFToken": token})
    a.send("initials again")
    assert said(b, "initials again")["avatar_url"] is None
    uploaded(client, png(color=BLUE), token)
    b.send("bob has none")
    assert said(a, "bob has none")["avatar_url"] is None
    a.send("alice has one")
    assert said(b, "alice has one")["avatar_url"] != second


@pytest.mark.database
def test_history_and_hello_carry_the_picture_as_it_is_now(app, client, ws_connect, alice, bob):
    a = ws_connect(alice)
    a.send("an old message")
    until(a, "message")
    url = uploaded(client, png(), signed_in(client))
    c = ws_connect(bob)
    assert [m["avatar_url"] for m in c.hello["history"]] == [url]  # Older messages too.
    assert ws_connect(alice).hello["user"]["avatar_url"] == url
    c.send({"type": "history", "room": "general"})
    assert [m["avatar_url"] for m in until(c, "history")["messages"]] == [url]
    with app.app_context():
        (data,) = describe(db.session.scalars(select(Message)).all())
        assert data["avatar_url"] == url


# ---- On S3 -------------------------------------------------------------------------------------


@pytest.fixture
def on_s3(app_config, s3_server, s3_bucket):
    """The app's file store on a bucket of moto's S3 server; the boto3 client and bucket."""
    client, bucket = s3_bucket
    app_config.update(CHAT_S3_BUCKET=bucket, CHAT_S3_ENDPOINT_URL=s3_server, CHAT_S3_PREFIX="t/")
    return client, bucket


def test_on_s3_a_picture_is_kept_served_and_replaced_there(on_s3, app, client, alice):
    token = signed_in(client)
    first = uploaded(client, png(color=GREEN), token)
    assert bucket_keys(on_s3) == [f"t/{first.removeprefix('/')}"]
    assert not (Path(app.config["CHAT_UPLOAD_DIR"]) / "avatars").exists()  # Not in the folder.
    picture, response, _ = served(client, first)
    assert picture.size == (256, 256)
    assert "immutable" in response.headers["Cache-Control"]
    second = uploaded(client, png(color=RED), token)
    assert bucket_keys(on_s3) == [f"t/{second.removeprefix('/')}"]  # The old one left the bucket.
    client.post("/profile/avatar/delete", data={"csrf_token": token})
    assert bucket_keys(on_s3) == []
