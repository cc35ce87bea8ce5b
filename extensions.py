"""Flask extensions, created unbound here and bound to an app in ``create_app``."""

from typing import TYPE_CHECKING

from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sock import Sock
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base for the models; constraints get stable names for migrations."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


db = SQLAlchemy(model_class=Base)
if TYPE_CHECKING:
    from flask_sqlalchemy.model import Model as FlaskModel

    # mypy cannot subclass an attribute (``db.Model``), so the models' base is named here. This
    # is what Flask-SQLAlchemy builds: ``Base`` (mapping, metadata) plus its mixins (``query``).

    class Model(FlaskModel, Base):
        """The declarative base the models subclass: ``db.Model``, as mypy sees it."""

        __abstract__ = True

else:
    Model = db.Model
babel = Babel()
login_manager = LoginManager()
csrf = CSRFProtect()
sock = Sock()
migrate = Migrate()
# Counts per client address by default; login views add a per-email limit (see accounts).
limiter = Limiter(key_func=get_remote_address)
