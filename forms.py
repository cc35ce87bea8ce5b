"""The account forms, and the email and password rules they share with ``flask create-user``."""

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SubmitField
from wtforms.validators import EqualTo, InputRequired, Length, ValidationError

from models import User

MAX_EMAIL_CHARS = 254
DUPLICATE_EMAIL = "An account with this email already exists."
# Long enough for any passphrase, short enough that hashing it costs nothing unusual.
MAX_PASSWORD_CHARS = 128


def normalize_email(email):
    """Return ``email`` checked and lower-cased, or raise ValueError with a reason."""
    try:
        # No DNS lookups: the server may be offline, and a lookup would leak the address.
        checked = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(str(error)) from None
    return checked.normalized.lower()


def password_problem(password, email):
    """Return why ``password`` is too weak for ``email``, or None."""
    minimum = current_app.config["CHAT_MIN_PASSWORD_LENGTH"]
    if len(password) < minimum:
        return f"The password must be at least {minimum} characters long."
    if len(password) > MAX_PASSWORD_CHARS:
        return f"The password must be at most {MAX_PASSWORD_CHARS} characters long."
    if password.strip().lower() in {email.strip().lower(), email.split("@", 1)[0].lower()}:
        return "The password must not be your email address."
    return None


class LoginForm(FlaskForm):
    """Email and password, with an optional long-lived "remember me" cookie."""

    email = EmailField("Email", validators=[InputRequired(), Length(max=MAX_EMAIL_CHARS)])
    password = PasswordField(
        "Password", validators=[InputRequired(), Length(max=MAX_PASSWORD_CHARS)]
    )
    remember = BooleanField("Remember me")
    submit = SubmitField("Log in")


class RegisterForm(FlaskForm):
    """A new account: email, password and its confirmation."""

    email = EmailField("Email", validators=[InputRequired(), Length(max=MAX_EMAIL_CHARS)])
    password = PasswordField("Password", validators=[InputRequired()])
    confirm = PasswordField(
        "Confirm password",
        validators=[InputRequired(), EqualTo("password", message="The passwords do not match.")],
    )
    submit = SubmitField("Create account")

    def validate_email(self, field):
        """A well-formed address that has no account yet."""
        try:
            field.data = normalize_email(field.data)
        except ValueError as error:
            raise ValidationError(str(error)) from None
        if User.by_email(field.data) is not None:
            raise ValidationError(DUPLICATE_EMAIL)

    def validate_password(self, field):
        """Long enough, and not the email itself."""
        problem = password_problem(field.data, self.email.data or "")
        if problem:
            raise ValidationError(problem)


class PasswordForm(FlaskForm):
    """Change the password: the current one, then the new one twice."""

    current = PasswordField("Current password", validators=[InputRequired()])
    password = PasswordField("New password", validators=[InputRequired()])
    confirm = PasswordField(
        "Confirm new password",
        validators=[InputRequired(), EqualTo("password", message="The passwords do not match.")],
    )
    submit = SubmitField("Change password")

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def validate_current(self, field):
        """The user proves they know the password they are replacing."""
        if not self.user.check_password(field.data):
            raise ValidationError("This is not your current password.")

    def validate_password(self, field):
        """Long enough, not the email, and not the same as before."""
        problem = password_problem(field.data, self.user.email)
        if problem is None and field.data == self.current.data:
            problem = "The new password must differ from the current one."
        if problem:
            raise ValidationError(problem)
