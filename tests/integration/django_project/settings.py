"""Settings of the test project. Databases from the environment:

* ``OKT_DJANGO_SQLITE``: the SQLite file of the ``default`` alias;
* ``OKT_DJANGO_PG_SCHEMA``: when set, a ``pg`` alias on the test PostgreSQL with that schema first on
  its search_path (each test process has its own);
* ``OKT_DJANGO_MYSQL_DB``: when set, a ``mysql`` alias on the test MariaDB, database of that name,
  through PyMySQL standing in for mysqlclient (``pymysql.install_as_MySQLdb()``);
* ``OKT_DJANGO_OUTBOX``: the alias holding the outbox (``OUTBOXKIT["DATABASE"]``);
* ``OKT_DJANGO_BROKER``: ``OUTBOXKIT["BROKER"]``.
"""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = "outboxkit-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.integration.django_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test users

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "outboxkit.contrib.django",
    "tests.integration.django_project.shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES: dict[str, Any] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("OKT_DJANGO_SQLITE", "/tmp/outboxkit-django-test.db"),
        # IMMEDIATE: a writing transaction takes SQLite's write lock at BEGIN (Django 5.1+), as
        # outboxkit's own writers do, so two writers never deadlock upgrading a read lock.
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
    }
}
if os.environ.get("OKT_DJANGO_PG_SCHEMA"):
    DATABASES["pg"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("OKT_DJANGO_PG_NAME", "test"),
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "OPTIONS": {"options": f"-c search_path={os.environ['OKT_DJANGO_PG_SCHEMA']}"},
    }
if os.environ.get("OKT_DJANGO_MYSQL_DB"):
    import pymysql

    pymysql.install_as_MySQLdb()  # mysqlclient needs a C build; PyMySQL answers as MySQLdb
    DATABASES["mysql"] = {
        "ENGINE": "django.db.backends.mysql",
        "NAME": os.environ["OKT_DJANGO_MYSQL_DB"],
        "USER": "root",
        "HOST": "127.0.0.1",
        "PORT": "3306",
    }

OUTBOXKIT = {
    "DATABASE": os.environ.get("OKT_DJANGO_OUTBOX", "default"),
    "BROKER": os.environ.get("OKT_DJANGO_BROKER", "nats://127.0.0.1:4222"),
    "SOURCE": "/shop",
    "RELAY": {"poll_interval": 0.1},
}
