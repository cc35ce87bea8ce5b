"""The account forms, and the email and password rules they share with ``flask create-user``."""

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import EqualTo, InputRequired, Length, ValidationError

from core.text import has_control_characters, is_invisible
from i18n import LANGUAGES
from models import MAX_DISPLAY_NAME_CHARS, User

MAX_EMAIL_CHARS = 254
PASSWORDS_DIFFER = _l("The passwords do not match.")
DUPLICATE_EMAIL = _l("An account with this email already exists.")
# Long enough for any passphrase, short enough that hashing it costs nothing unusual.
MAX_PASSWORD_CHARS = 128


def normalize_email(email: str) -> str:
    """Return ``email`` checked and lower-cased, or raise ValueError with a reason."""
    try:
        # No DNS lookups: the server may be offline, and a lookup would leak the address.
        checked = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as error:
        # email-validator explains precisely, but in English only: other languages get a sentence
        # of their own.
        if str(get_locale() or "en") == "en":
            raise ValueError(str(error)) from None
        raise ValueError(_("Enter a valid email address, such as name@example.com.")) from None
    return checked.normalized.lower()


def password_problem(password: str, email: str) -> str | None:
    """Return why ``password`` is too weak for ``email``, or None."""
    minimum = current_app.config["CHAT_MIN_PASSWORD_LENGTH"]
    if len(password) < minimum:
        return _("The password must be at least %(n)s characters long.", n=minimum)
    if len(password) > MAX_PASSWORD_CHARS:
        return _("The password must be at most %(n)s characters long.", n=MAX_PASSWORD_CHARS)
    if password.strip().lower() in {email.strip().lower(), email.split("@", 1)[0].lower()}:
        return _("The password must not be your email address.")
    return None


class LoginForm(FlaskForm):
    """Email and password, with an optional long-lived "remember me" cookie."""

    email = EmailField(_l("Email"), validators=[InputRequired(), Length(max=MAX_EMAIL_CHARS)])
    password = PasswordField(
        _l("Password"), validators=[InputRequired(), Length(max=MAX_PASSWORD_CHARS)]
    )
    remember = BooleanField(_l("Remember me"))
    submit = SubmitField(_l("Log in"))


class ForgotForm(FlaskForm):
    """The address of an account whose password is forgotten."""

    email = EmailField(_l("Email"), validators=[InputRequired(), Length(max=MAX_EMAIL_CHARS)])
    submit = SubmitField(_l("Send me a link"))

    def validate_email(self, field: EmailField) -> None:
        """A well-formed address (whether it has an account is never said)."""
        try:
            field.data = normalize_email(field.data)
        except ValueError as error:
            raise ValidationError(str(error)) from None


class RegisterForm(FlaskForm):
    """A new account: email, password and its confirmation."""

    email = EmailField(_l("Email"), validators=[InputRequired(), Length(max=MAX_EMAIL_CHARS)])
    password = PasswordField(_l("Password"), validators=[InputRequired()])
    confirm = PasswordField(
        _l("Confirm password"),
        validators=[
            InputRequired(),
            EqualTo("password", message=PASSWORDS_DIFFER),
        ],
    )
    submit = SubmitField(_l("Create account"))

    def validate_email(self, field: EmailField) -> None:
        """A well-formed address that has no account yet."""
        try:
            field.data = normalize_email(field.data)
        except ValueError as error:
            raise ValidationError(str(error)) from None
        if User.by_email(field.data) is not None:
            raise ValidationError(DUPLICATE_EMAIL)

    def validate_password(self, field: PasswordField) -> None:
        """Long enough, and not the email itself."""
        problem = password_problem(field.data, self.email.data or "")
        if problem:
            raise ValidationError(problem)


class ResetForm(FlaskForm):
    """A new password, twice, from a reset link an administrator handed over."""

    password = PasswordField(_l("New password"), validators=[InputRequired()])
    confirm = PasswordField(
        _l("Confirm new password"),
        validators=[InputRequired(), EqualTo("password", message=PASSWORDS_DIFFER)],
    )
    submit = SubmitField(_l("Set password"))

    def __init__(self, user: User, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def validate_password(self, field: PasswordField) -> None:
        """Long enough, and not the email."""
        problem = password_problem(field.data, self.user.email)
        if problem:
            raise ValidationError(problem)


class PasswordForm(FlaskForm):
    """Change the password: the current one, then the new one twice."""

    current = PasswordField(_l("Current password"), validators=[InputRequired()])
    password = PasswordField(_l("New password"), validators=[InputRequired()])
    confirm = PasswordField(
        _l("Confirm new password"),
        validators=[
            InputRequired(),
            EqualTo("password", message=PASSWORDS_DIFFER),
        ],
    )
    submit = SubmitField(_l("Change password"))

    def __init__(self, user: User, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def validate_current(self, field: PasswordField) -> None:
        """The user proves they know the password they are replacing."""
        if not self.user.check_password(field.data):
            raise ValidationError(_("This is not your current password."))

    def validate_password(self, field: PasswordField) -> None:
        """Long enough, not the email, and not the same as before."""
        problem = password_problem(field.data, self.user.email)
        if problem is None and field.data == self.current.data:
            problem = _("The new password must differ from the current one.")
        if problem:
            raise ValidationError(problem)


class ProfileForm(FlaskForm):
    """How the user appears and which language the pages speak."""

    display_name = StringField(
        _l("Display name"),
        description=_l("Shown with your messages. Leave empty to use the start of your email."),
    )
    locale = SelectField(
        _l("Language"),
        # Each language is named in itself, and marked so screen readers pronounce it right.
        choices=[
            SelectChoice("", _l("As my browser prefers")),
            *(
                SelectChoice(code, name, render_kw={"lang": code})
                for code, name in LANGUAGES.items()
            ),
        ],
    )
    submit = SubmitField(_l("Save"))

    def validate_display_name(self, field: StringField) -> None:
        """Trimmed; 1 to 40 visible characters, or empty for the default."""
        field.data = " ".join((field.data or "").split())
        if len(field.data) > MAX_DISPLAY_NAME_CHARS:
            message = _("A display name is at most %(n)s characters.", n=MAX_DISPLAY_NAME_CHARS)
            raise ValidationError(message)
        if has_control_characters(field.data):
            raise ValidationError(_("A display name cannot contain control characters."))
        if field.data and is_invisible(field.data):
            raise ValidationError(_("A display name needs at least one visible character."))
