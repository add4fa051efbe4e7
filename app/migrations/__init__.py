"""Database migrations (Alembic), applied by `python -m app migrate`."""

from pathlib import Path

from alembic import command
from alembic.config import Config

from app.adapters.database import sqlalchemy_url

LOCATION = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(LOCATION))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    """Brings the database to the newest schema; safe to run again, and concurrently (an advisory lock serialises)."""
    command.upgrade(alembic_config(database_url), "head")
