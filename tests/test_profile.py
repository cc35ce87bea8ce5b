"""Languages (English, French) and the profile page: display name, language, security links."""

import json
import re
import subprocess
import sys

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app import create_app
from extensions import db
from helpers import PASSWORD, ROOT, csrf_token, login, submit_form, token_issued_at
from models import User

FRENCH = {"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}


def save_profile(client, display_name="", locale=""):
    """Submit the profile form."""
    return submit_form(client, "/profile", {"display_name": display_name, "locale": locale})


def stored(app, user_id):
    """The user as stored now."""
    with app.app_context():
        user = db.session.get(User, user_id)
        return user.display_name, user.locale, user.name


# ---- Languages ---------------------------------------------------------------------------------


def test_pages_are_english_by_default(client):
    page = client.get("/login").text
    assert '<html lang="en">' in page
    assert "<h1>Log in</h1>" in page


def test_the_browser_language_is_used_when_the_user_chose_none(client):
    page = client.get("/login", headers=FRENCH).text
    assert '<html lang="fr">' in page
    assert "<h1>Se connecter</h1>" in page
    assert "Mot de passe" in page


def test_an_unknown_browser_language_falls_back_to_english(client):
    page = client.get("/login", headers={"Accept-Language": "de-DE,de;q=0.9"}).text
    assert '<html lang="en">' in page


def test_form_errors_and_flashes_are_translated(client, make_user):
    make_user()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = FRENCH["Accept-Language"]
    wrong = submit_form(client, "/login", {"email": "alice@example.com", "password": "nope"})
    assert wrong.status_code == 401
    assert "Adresse e-mail ou mot de passe incorrect." in wrong.text
    fields = {"email": "b@example.com", "password": "x", "confirm": "x"}
    short = submit_form(client, "/register", fields)
    assert "au moins 8 caractères" in short.text
    login(client)
    client.post("/logout", data={"csrf_token": csrf_token(client.get("/"))})
    assert "Vous êtes déconnecté." in client.get("/login").text


@pytest.mark.database
def test_the_saved_choice_beats_the_browser(app, client, alice):
    login(client)
    assert save_profile(client, locale="fr").status_code == 302
    page = client.get("/", headers={"Accept-Language": "en"}).text
    assert '<html lang="fr">' in page
    catalog = json.loads(re.search(r'id="chat-i18n">(.*?)</script>', page, re.S).group(1))
    assert catalog["locale"] == "fr"
    assert catalog["strings"]  # The page's own strings, in French.
    assert all(isinstance(text, str) and text for text in catalog["strings"].values())
    save_profile(client, locale="en")
    assert '<html lang="en">' in client.get("/", headers=FRENCH).text


@pytest.mark.database
def test_error_frames_speak_the_users_language(app, live_server, alice):
    with app.app_context():
        db.session.get(User, alice).locale = "fr"
        db.session.commit()
    token = token_issued_at(app, alice)
    with connect(f"ws://{live_server}/ws?token={token}", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        ws.send(json.dumps({"type": "message", "text": "   "}))
        error = json.loads(ws.recv(timeout=5))
        # Refused by the committer thread, not the socket's own: in French all the same.
        ws.send(json.dumps({"type": "message", "room": "nowhere", "text": "hi", "client_id": "x"}))
        refused = json.loads(ws.recv(timeout=5))
    assert error["code"] == "empty"  # Codes stay the same in every language...
    assert error["message"] == "Le message est vide."  # ...the human text does not.
    assert (refused["code"], refused["client_id"]) == ("forbidden", "x")
    assert refused["message"] == "Vous n'êtes pas dans ce salon."


def test_the_french_catalog_covers_every_string_in_the_code(tmp_path):
    # Extracting again finds exactly what the catalog holds: no string was added without
    # `make i18n`, and every one of them has a French translation.
    pot = tmp_path / "messages.pot"
    extract = [sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg"]
    subprocess.run([*extract, "-k", "_l", "-k", "lazy_gettext", "-o", str(pot), "."],
                   cwd=ROOT, check=True)  # fmt: skip
    with open(pot, "rb") as file:
        in_code = {m.id for m in read_po(file) if m.id}
    with open(ROOT / "translations/fr/LC_MESSAGES/messages.po", "rb") as file:
        french = {m.id: m for m in read_po(file) if m.id}
    assert in_code == french.keys()
    assert [m.id for m in french.values() if not m.string or m.fuzzy] == []


def _key(text):
    """A message's id or string; a plural's forms (a list from ``read_mo``) as a tuple."""
    return tuple(text) if isinstance(text, list | tuple) else text


def test_every_committed_catalog_is_the_compiled_form_of_its_po():
    # The .mo files are committed (every way of installing the app has them): each must say
    # what its .po says, so a translation edited without `make catalogs` fails here.
    for po_path in sorted(ROOT.glob("translations/*/LC_MESSAGES/messages.po")):
        mo_path = po_path.with_suffix(".mo")
        assert mo_path.is_file(), f"{mo_path} is missing: run `make catalogs` and commit it"
        with po_path.open("rb") as file:
            source = {_key(m.id): _key(m.string) for m in read_po(file) if m.id and not m.fuzzy}
        with mo_path.open("rb") as file:
            compiled = {_key(m.id): _key(m.string) for m in read_mo(file) if m.id}
        assert compiled == source, f"{mo_path} is out of date: run `make catalogs` and commit it"


def test_the_app_refuses_to_start_without_a_languages_catalog(app_config, tmp_path):
    # Flask-Babel would fall back to English in silence, under <html lang="fr">.
    config = {**app_config, "BABEL_TRANSLATION_DIRECTORIES": str(tmp_path)}
    with pytest.raises(RuntimeError, match=r"No compiled Français catalog: .*fr/LC_MESSAGES"):
        create_app(config)
    (tmp_path / "fr" / "LC_MESSAGES").mkdir(parents=True)
    (tmp_path / "fr" / "LC_MESSAGES" / "messages.mo").write_bytes(b"")
    with pytest.raises(RuntimeError, match="holds no translation"):
        create_app(config)


# ---- Profile -----------------------------------------------------------------------------------


def test_the_profile_shows_the_default_name_and_the_security_actions(client, alice):
    login(client)
    page = client.get("/profile").text
    assert 'placeholder="alice"' in page
    assert 'action="/logout-everywhere"' in page
    assert 'href="/password"' in page
    assert "alice@example.com" in page


@pytest.mark.database
def test_a_display_name_is_saved_trimmed_and_shown(app, client, alice):
    login(client)
    response = save_profile(client, display_name="  Alice   Liddell ")
    assert response.status_code == 302
    assert stored(app, alice) == ("Alice Liddell", None, "Alice Liddell")
    assert "Alice Liddell" in client.get("/").text
    save_profile(client, display_name="")  # Empty: back to the email's local part.
    assert stored(app, alice) == (None, None, "alice")


@pytest.mark.database
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("x" * 41, "at most 40 characters"),
        ("bad\x1bname", "control characters"),
        ("\u200b\u200b", "visible character"),
    ],
)
def test_bad_display_names_are_refused_with_a_reason(app, client, alice, name, error):
    login(client)
    response = save_profile(client, display_name=name)
    assert response.status_code == 400
    assert error in response.text
    assert stored(app, alice) == (None, None, "alice")


@pytest.mark.database
def test_an_unknown_language_is_refused(app, client, alice):
    login(client)
    assert save_profile(client, locale="xx").status_code == 400
    assert stored(app, alice)[1] is None


def test_the_profile_needs_a_login(client):
    response = client.get("/profile")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


@pytest.mark.database
def test_a_new_name_reaches_open_sockets_and_new_messages(app, client, ws_connect, alice, bob):
    a, b = ws_connect(alice), ws_connect(bob)
    a.await_presence(online=[bob])
    b.settle_presence()
    login(client)  # alice, in the browser
    save_profile(client, display_name="Queen Alice")
    renamed = b.recv_type("presence")
    assert renamed["online"] == [{"user_id": alice, "user": "Queen Alice"}]
    a.send("long live me")
    message = b.recv_type("message")
    assert (message["user_id"], message["user"]) == (alice, "Queen Alice")


@pytest.mark.database
def test_changing_the_password_from_the_profile_revokes_sockets(app, client, ws_connect, alice):
    a = ws_connect(alice)
    login(client)
    new = "a brand new passphrase"
    fields = {"current": PASSWORD, "password": new, "confirm": new}
    assert submit_form(client, "/password", fields).status_code == 302
    for _ in range(20):  # Whatever was queued before the close frame, then the close.
        try:
            a.recv()
        except ConnectionClosed:
            break
    assert a.ws.close_code == 4001
